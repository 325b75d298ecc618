import json

import pytest
import torch

from cluster.commands.score import Video, score_job
from data.errors import InputError
from tests.support.models import MODEL_CFG
from tests.support.videos import write_noise_video
from trainer.checkpoint import load_model, save_checkpoint
from trainer.model import ResNet3D
from trainer.serve.alerting.policy import AlertPolicy
from trainer.serve.runtime.scoring import ScoreConfig, frame_probabilities, score_video


def test_score_output_layout_matches_the_seed_tool(tmp_path):
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG)
    save_checkpoint(tmp_path / "model.pth", model, MODEL_CFG, epoch=1)
    model, cfg = load_model(tmp_path / "model.pth")
    video = write_noise_video(tmp_path / "v.mp4", 40)
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
    good = write_noise_video(tmp_path / "good.mp4", 20)
    output = tmp_path / "out" / "output.json"
    entries, _ = score_job(model, MODEL_CFG, [Video.of(bad), Video.of(good)], output, ScoreConfig(16, 4),
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


# ---------------------------------------------------------------------------------------------------------------
# Coverage, feature mode, precision


def _covered(entry):
    return sorted({f for c in entry["clips"] for f in range(c["segment"][0], c["segment"][1] + 1)})


@pytest.mark.parametrize("n, segments", [
    (50, [[1, 16], [17, 32], [33, 48], [35, 50]]),  # the tail: the last 16 frames, overlapping
    (10, [[1, 10]]),                                 # shorter than a segment: its own frames, loop-padded
])
def test_segments_cover_the_video_one_based(tmp_path, n, segments):
    model = ResNet3D(MODEL_CFG).eval()
    entry = score_video(model, MODEL_CFG, write_noise_video(tmp_path / "v.mp4", n), ScoreConfig(16, 8))
    assert [c["segment"] for c in entry["clips"]] == segments
    assert _covered(entry) == list(range(1, n + 1))
    assert entry["clips"][-1]["end_s"] == pytest.approx(n / 25)
    assert entry["clips"][0]["start_s"] == 0.0


def test_feature_mode_writes_the_pooled_features_of_the_last_stage(tmp_path):
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    video = write_noise_video(tmp_path / "v.mp4", 40)
    features = score_video(model, MODEL_CFG, video, ScoreConfig(16, 8), mode="feature")
    scores = score_video(model, MODEL_CFG, video, ScoreConfig(16, 8))
    assert [c["segment"] for c in features["clips"]] == [c["segment"] for c in scores["clips"]]
    for f, s in zip(features["clips"], scores["clips"]):
        assert set(f) == {"segment", "features", "start_s", "end_s"}  # the seed's feature layout + seconds
        assert len(f["features"]) == 8 * MODEL_CFG.width == model.fc.in_features  # 512 at width 64
        with torch.no_grad():  # the features are what fc turns into the scores
            logits = model.fc(torch.tensor([f["features"]]))[0].tolist()
        assert logits == pytest.approx(s["scores"], abs=1e-5)


def test_bf16_plan_scores_close_to_fp32_and_logs_the_path(tmp_path, caplog):
    import copy
    import logging

    from trainer.accel import AccelPlan
    from trainer.serve.runtime.scoring import prepare_model

    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    video = write_noise_video(tmp_path / "v.mp4", 40)
    fp32 = score_video(model, MODEL_CFG, video, ScoreConfig(16, 8))
    plan = AccelPlan("bf16", "torch", True, "bf16: test")
    with caplog.at_level(logging.INFO, logger="trainer.serve.runtime.scoring"):
        bf16_model = prepare_model(copy.deepcopy(model), plan)
    assert "scoring in bf16 channels_last_3d" in caplog.text
    assert bf16_model.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    bf16 = score_video(bf16_model, MODEL_CFG, video, ScoreConfig(16, 8), plan=plan)
    a = torch.tensor([c["scores"] for c in fp32["clips"]])
    b = torch.tensor([c["scores"] for c in bf16["clips"]])
    assert b.dtype == torch.float32 and not torch.equal(a, b)  # it did run in bf16
    # bf16 keeps 8 bits of mantissa: ~0.4% per rounding, a few roundings deep
    torch.testing.assert_close(b, a, rtol=0.02, atol=0.02 * a.abs().max().item())


def test_alerts_and_evaluation_need_a_fight_model(tmp_path):
    import dataclasses

    from trainer.serve.runtime.scoring import check_fight_model

    three = dataclasses.replace(MODEL_CFG, n_classes=3)
    with pytest.raises(InputError, match=r"m.pth: checkpoint has 3 classes, fightwatch detects 2 \(no fight, fight\)"):
        check_fight_model(three, tmp_path / "m.pth")
    check_fight_model(MODEL_CFG, tmp_path / "m.pth")


def test_other_classes_are_labelled_by_name_without_fight_probability(tmp_path):
    import dataclasses

    names = ("run", "jump", "sit")
    cfg = dataclasses.replace(MODEL_CFG, n_classes=3)
    model = ResNet3D(cfg).eval()
    entry = score_video(model, cfg, write_noise_video(tmp_path / "v.mp4", 40), ScoreConfig(16, 4), class_names=names)
    assert len(entry["clips"]) == 3
    for clip in entry["clips"]:
        assert clip["label"] == names[max(range(3), key=clip["scores"].__getitem__)]
        assert "fight_prob" not in clip


def test_decoding_ahead_gives_the_same_entry(tmp_path):
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    video = write_noise_video(tmp_path / "v.mp4", 90)
    entries = [score_video(model, MODEL_CFG, video, ScoreConfig(stride=8, batch_size=2), decode_ahead=ahead)
               for ahead in (0, 2)]
    assert len(entries[0]["clips"]) == 11  # windows from frames 0, 8, ..., 72 and the tail [75, 90]
    assert entries[0] == entries[1]


def test_prefetched_keeps_order_raises_the_producers_error_and_stops_with_its_consumer():
    import threading

    from trainer.serve.runtime.scoring import prefetched

    assert list(prefetched(iter(range(50)), 2)) == list(range(50))

    def failing():
        yield 1
        raise InputError("v.mp4: cannot decode video")

    got = []
    with pytest.raises(InputError, match="cannot decode"):
        for item in prefetched(failing(), 2):
            got.append(item)
    assert got == [1]
    before = threading.active_count()
    for item in prefetched(iter(range(1000)), 2):
        if item == 3:
            break  # the consumer leaves early: the producer must not stay blocked on the full queue
    assert threading.active_count() == before


def test_regions_score_where_the_window_moves_and_the_hottest_decides(tmp_path):
    """A wide 640x360 scene with a small fight among calm bystanders, scored with regions: every segment lists the
    whole-frame view (the centre square) first and at most `budget` more, its fight_prob, label and scores are its
    hottest region's, and during the fight a region covers the fighters' true box. Budget 0 is today's output."""
    from data.synthetic import write_wide
    from trainer.serve.runtime.regions import RegionConfig, iou

    video = tmp_path / "wide.mp4"
    truth = write_wide(video, 3, width=640, height=360, fight_width=0.15, calm_before=1.0, fight=1.6, calm_after=0.4)
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    entry = score_video(model, MODEL_CFG, video, ScoreConfig(16, 4, RegionConfig(budget=2)))
    boxes = {b["frame"]: b["box"] for b in truth["boxes"]}
    covered = []
    for clip in entry["clips"]:
        regions = clip["regions"]
        assert regions[0]["box"] == [0.2188, 0.0, 0.7812, 1.0] and 1 <= len(regions) <= 3
        hottest = max(regions, key=lambda r: r["fight_prob"])
        assert clip["fight_prob"] == hottest["fight_prob"]
        assert clip["fight_prob"] == pytest.approx(torch.softmax(torch.tensor(clip["scores"]), 0)[1].item(), abs=1e-6)
        middle = (clip["segment"][0] + clip["segment"][1]) // 2 - 1
        if middle in boxes:
            covered.append(max(iou(r["box"], boxes[middle]) for r in regions[1:]) if regions[1:] else 0.0)
    assert covered and min(covered) > 0.1, covered  # a motion region sits on the fighters in every fight segment
    plain = score_video(model, MODEL_CFG, video, ScoreConfig(16, 4))
    assert all("regions" not in clip for clip in plain["clips"])
    assert [c["segment"] for c in plain["clips"]] == [c["segment"] for c in entry["clips"]]


def test_feature_mode_and_label_models_score_the_whole_frame_only(tmp_path):
    from trainer.serve.runtime.regions import RegionConfig

    video = write_noise_video(tmp_path / "v.mp4", 20)
    model = ResNet3D(MODEL_CFG).eval()
    features = score_video(model, MODEL_CFG, video, ScoreConfig(16, 8, RegionConfig(budget=2)), mode="feature")
    assert all("regions" not in clip for clip in features["clips"])
