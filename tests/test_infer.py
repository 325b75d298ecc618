import json

import av
import numpy as np
import pytest
import torch

from cluster.score import score_job
from data.errors import InputError
from trainer.alerts import AlertPolicy
from trainer.checkpoint import load_model, save_checkpoint
from trainer.infer import ScoreConfig, frame_probabilities, score_video, segment_starts
from trainer.model import ModelConfig, ResNet3D

MODEL_CFG = ModelConfig(depth=10, shortcut="A", width=4, n_classes=2, sample_size=32, sample_duration=16,
                        pretrained=None, ft_begin="conv1", mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0),
                        value_scale=255.0)


def write_video(path, n_frames, size=(64, 48), fps=25):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        rng = np.random.default_rng(n_frames)
        for _ in range(n_frames):
            frame = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("n, stride, expected", [
    (48, 16, [0, 16, 32]),       # exact: no tail
    (50, 16, [0, 16, 32, 34]),   # tail: the last 16 frames
    (10, 16, [0]),               # shorter than a segment: loop-padded
    (40, 8, [0, 8, 16, 24]),
])
def test_segment_starts_cover_every_frame(n, stride, expected):
    assert segment_starts(n, 16, stride) == expected


def test_score_output_layout_matches_the_seed_tool(tmp_path):
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG)
    save_checkpoint(tmp_path / "model.pth", model, MODEL_CFG, epoch=1)
    model, cfg = load_model(tmp_path / "model.pth")
    video = write_video(tmp_path / "v.mp4", 40)
    entry = score_video(model, cfg, video, ScoreConfig(stride=16, batch_size=2))
    assert entry["video"] == "v.mp4" and entry["frames"] == 40 and entry["fps"] == 25.0
    assert [c["segment"] for c in entry["clips"]] == [[1, 16], [17, 32], [25, 40]]
    for clip in entry["clips"]:
        assert set(clip) == {"segment", "label", "scores", "start_s", "end_s", "fight_prob"}
        assert clip["label"] in ("no fight", "fight") and len(clip["scores"]) == 2
        assert clip["fight_prob"] == pytest.approx(torch.softmax(torch.tensor(clip["scores"]), 0)[1].item(), abs=1e-6)
    assert entry["clips"][1]["start_s"] == pytest.approx(16 / 25)
    probs = frame_probabilities(entry, 40)
    assert probs[0] == entry["clips"][0]["fight_prob"] and probs[-1] == entry["clips"][-1]["fight_prob"]


def test_unreadable_video_gets_an_error_entry_and_the_rest_go_on(tmp_path):
    model = ResNet3D(MODEL_CFG).eval()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    good = write_video(tmp_path / "good.mp4", 20)
    output = tmp_path / "out" / "output.json"
    entries, _ = score_job(model, MODEL_CFG, [bad, good], output, ScoreConfig(16, 4),
                           AlertPolicy(0.5, 2, 2, 0.0))
    saved = json.loads(output.read_text())
    assert saved == entries
    assert "bad.mp4" in saved[0]["error"] and saved[0]["clips"] == []
    assert "error" not in saved[1] and len(saved[1]["clips"]) == 2


def test_loading_something_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_text("hello")
    with pytest.raises(InputError, match="x.pth: not a readable checkpoint"):
        load_model(tmp_path / "x.pth")
    with pytest.raises(InputError, match="model file not found"):
        load_model(tmp_path / "absent.pth")
