"""Damaged video read through as ffmpeg reads it (data/decode.py), in `score`, `prepare`, `evaluate` and `watch`:
real H.264, HEVC and VP9 files with noise written into them, cut short or missing a keyframe, held against the
frames Debian's ffmpeg decodes from the same bytes; and a UDP camera whose network corrupts 1% of its datagrams,
watched to its end without a reconnect."""

import json

import av
import pytest

from data.clips import VideoFrames
from data.decode import DecodeConfig, DecodeLog, decoded_frames
from data.errors import InputError
from data.extract import ClipError, extract_window
from tests.support.damage import LossyUdpCamera, cut_short, ffmpeg_frames_or_skip, lose_keyframe, noise_into
from tests.support.models import MODEL_CFG, fixed_output_model
from tests.support.videos import decode_index, scramble_frames, write_video
from tests.support.watch import models, watch  # noqa: F401  (models is a fixture)
from trainer.checkpoint import load_model
from trainer.serve.alerting.store import AlertStore
from trainer.serve.runtime.scoring import ScoreConfig, score_video

FRAMES, SIZE, GOP = 150, (320, 240), 50  # 6 s at 25 fps, a keyframe every 2 s
CODECS = [pytest.param("h264.mp4", "libx264", id="h264"), pytest.param("hevc.mp4", "libx265", id="hevc"),
          pytest.param("vp9.webm", "libvpx-vp9", id="vp9")]
SHARE = 0.95  # of ffmpeg's frames, at the least


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The undamaged files, moov first where mp4 (so a cut file keeps its index), by name."""
    folder = tmp_path_factory.mktemp("clean")
    return {name: write_video(folder / name, FRAMES, SIZE, gop=GOP, codec=codec,
                              container_options={"movflags": "+faststart"} if name.endswith(".mp4") else None)
            for name, codec in [(p.values[0], p.values[1]) for p in CODECS]}


def shown_index(frame) -> int | None:
    """The index a frame shows; None where damage painted over it (a frame the decoder concealed or built from
    the wrong reference shows garbage, in ffmpeg too)."""
    try:
        return decode_index(frame)
    except ValueError:
        return None


def read(path, **kwargs) -> tuple[list[tuple[int, int | None]], DecodeLog]:
    """(lost before it, the index the frame shows) per frame decoded, and the read's log."""
    video = VideoFrames(path, **kwargs)
    shown = [(lost, shown_index(frame)) for lost, frame in video]
    return shown, video.log


def check_numbering(shown: list[tuple[int, int | None]], clean_from: int = FRAMES - GOP) -> None:
    """Frames keep their numbers across what was lost: from the first keyframe after the damage (the last group
    of pictures), each shows the index its number says."""
    number, checked = -1, 0
    for lost, index in shown:
        number += lost + 1
        if number >= clean_from:
            assert index == number, (number, index, shown)
            checked += 1
    assert checked == FRAMES - clean_from


def test_a_decode_log_merges_lost_spans_and_says_what_was_lost():
    log = DecodeLog(fps=25, declared=150, decoded=120, rejected=3, concealed=1)
    for number in (71, 72, 73, 90, 91, 92):
        log.mark_lost(number)
    assert log.spans == [(71, 73), (90, 92)] and log.lost == 6
    assert log.warnings() == [
        "decoded 120 of 126 frames: 6 lost (frames 71-73, 90-92), 3 packets rejected by the decoder",
        "1 frame decoded with concealed damage",
        "decoded 120 frames of a declared 150: the file ends early (24 frames missing)"]
    assert DecodeLog(fps=25, declared=151, decoded=150).warnings() == []  # a duration's rounding is not a loss
    assert DecodeLog(fps=25, declared=150, decoded=150).warnings() == []
    log.check("cam.mp4", DecodeConfig(max_loss_share=0.5))
    with pytest.raises(InputError, match=r"cam.mp4: the decoder failed on 5% of its frames, over "
                                         r"decode.max_loss_share 0.01; decoded 120 of 126"):
        log.check("cam.mp4", DecodeConfig(max_loss_share=0.01))
    with pytest.raises(InputError, match=r"empty.mp4: no frame of the video decodes$"):
        DecodeLog(fps=25).check("empty.mp4", DecodeConfig())


@pytest.mark.parametrize("name, codec", CODECS)
def test_noise_in_the_middle_is_read_through_as_ffmpeg_does(clean, tmp_path, name, codec):
    damaged = noise_into(clean[name], tmp_path / name, nbytes=clean[name].stat().st_size // 50)
    shown, log = read(damaged)  # as score and evaluate read
    assert len(shown) >= SHARE * ffmpeg_frames_or_skip(damaged) and len(shown) < FRAMES
    assert log.lost >= 1 and log.decoded + log.lost >= FRAMES - 1
    assert log.warnings()[0].startswith(f"decoded {len(shown)} of ") and "lost (frames " in log.warnings()[0]
    check_numbering(shown)
    reads: list[DecodeLog] = []  # as prepare reads: one clip of the whole video, across the gap
    clip = extract_window(damaged, 0, FRAMES / 25, 25.0, 64, decode=DecodeConfig(max_gap_frames=FRAMES), log=reads)
    assert len(clip) == FRAMES and reads[-1].decoded == len(shown) and reads[-1].warnings()


@pytest.mark.parametrize("name, codec", CODECS)
def test_a_file_cut_short_is_scored_as_far_as_it_goes_and_says_so(clean, tmp_path, name, codec):
    damaged = cut_short(clean[name], tmp_path / name, 0.75)
    shown, log = read(damaged)
    assert len(shown) >= SHARE * ffmpeg_frames_or_skip(damaged) and 10 <= len(shown) < 0.8 * FRAMES
    assert any(f"of a declared {FRAMES}: the file ends early" in w for w in log.warnings()), log.warnings()
    assert [index for _, index in shown[:10]] == list(range(10))


@pytest.mark.parametrize("name, codec", CODECS[:2])  # VP9's keyframes are not the only frames others refer to
def test_a_lost_keyframe_is_read_past(clean, tmp_path, name, codec):
    damaged = lose_keyframe(clean[name], tmp_path / name, which=1)
    shown, log = read(damaged)
    assert len(shown) >= SHARE * ffmpeg_frames_or_skip(damaged) and FRAMES - GOP <= len(shown) < FRAMES
    assert log.warnings(), "a lost keyframe must be said"
    check_numbering(shown)


def test_score_entries_say_what_was_lost_and_number_frames_by_time(clean, tmp_path):
    damaged = noise_into(clean["h264.mp4"], tmp_path / "cam.mp4", nbytes=clean["h264.mp4"].stat().st_size // 50)
    _, log = read(damaged)
    model, _ = load_model(fixed_output_model(tmp_path / "calm.pth", "calm"))
    (first, last), = log.spans
    entry = score_video(model, MODEL_CFG, damaged, ScoreConfig(16, 8, decode=DecodeConfig(max_gap_frames=64)))
    assert entry["frames"] == FRAMES and entry["warnings"] == log.warnings()
    # a short gap is scored across: the segments are those of the undamaged video
    assert [c["segment"] for c in entry["clips"]] == [[s + 1, s + 16] for s in range(0, FRAMES - 16, 16)] + [
        [FRAMES - 15, FRAMES]]
    entry = score_video(model, MODEL_CFG, damaged, ScoreConfig(16, 8, decode=DecodeConfig(max_gap_frames=0)))
    # a long one is not: no segment holds a frame lost, and the next begins on the frame after the gap
    assert entry["frames"] == FRAMES and entry["warnings"][:len(log.warnings())] == log.warnings()
    segments = [c["segment"] for c in entry["clips"]]
    assert all(end < first or start > last for start, end in segments) and [last + 1, last + 16] in segments
    segments = [clip["segment"] for clip in entry["clips"]]
    assert segments[0] == [1, 16] and segments[-1][1] == FRAMES
    assert all(clip["end_s"] == pytest.approx(clip["segment"][1] / 25) for clip in entry["clips"])
    json.dumps(entry)  # output.json takes it as it is


def test_too_much_damage_or_nothing_decodable_is_an_error_naming_the_file(clean, tmp_path):
    wrecked = noise_into(clean["h264.mp4"], tmp_path / "wrecked.mp4", nbytes=10**7, at=0.02)
    with pytest.raises(InputError, match=r"wrecked.mp4: "):
        list(VideoFrames(wrecked))
    damaged = noise_into(clean["h264.mp4"], tmp_path / "cam.mp4", nbytes=clean["h264.mp4"].stat().st_size // 50)
    with pytest.raises(InputError, match=r"cam.mp4: the decoder failed on \d+% of its frames, over decode.max_loss_share"):
        list(VideoFrames(damaged, decode=DecodeConfig(max_loss_share=0.05)))


def test_prepare_cuts_a_clip_across_a_short_gap_and_refuses_a_long_one(clean, tmp_path):
    damaged = noise_into(clean["h264.mp4"], tmp_path / "cam.mp4", nbytes=clean["h264.mp4"].stat().st_size // 50)
    _, log = read(damaged)
    first, last = log.spans[0]
    start = (first - 1) / 25 - 0.5  # a 2 s clip around the first frames lost
    reads: list[DecodeLog] = []
    clip = extract_window(damaged, start, start + 2.0, 25.0, 64, decode=DecodeConfig(max_gap_frames=30), log=reads)
    assert clip.shape[0] == 50 and reads[-1].lost >= last - first + 1 and reads[-1].warnings()
    with pytest.raises(ClipError, match=r"cam.mp4: .*frames lost before .* over decode.max_gap_frames 0") as error:
        extract_window(damaged, start, start + 2.0, 25.0, 64, decode=DecodeConfig(max_gap_frames=0))
    assert error.value.reason == "damaged"
    assert extract_window(damaged, 0.0, 1.0, 25.0, 64, decode=DecodeConfig(max_gap_frames=0)).shape[0] == 25


def test_a_stream_whose_decoder_takes_nothing_gives_up_after_the_rejects_it_is_allowed(tmp_path):
    """watch's reconnect for a live stream that keeps failing; a file is read to its end."""
    garbage = scramble_frames(write_video(tmp_path / "garbage.mp4", 40, (160, 120)))
    for give_up, rejected in ((None, 40), (5, 5)):
        with av.open(str(garbage)) as container:
            log = DecodeLog(25)
            assert list(decoded_frames(container, container.streams.video[0], log, give_up_after=give_up)) == []
        assert log.rejected == rejected and log.lost == rejected
        assert log.stopped == (None if give_up is None else "the decoder rejected 5 packets in a row")


@pytest.mark.slow  # a watch run
def test_watch_reads_a_damaged_recording_to_its_end_and_records_the_loss(models, clean, tmp_path, capsys):
    damaged = noise_into(clean["hevc.mp4"], tmp_path / "cam.mp4", nbytes=clean["hevc.mp4"].stat().st_size // 50)
    store = tmp_path / "alerts.db"
    rc, stats, _ = watch(capsys, "--model", models["calm"], "--out-dir", tmp_path / "out", "--no-realtime",
                         "--set", f"watch.store={store}", f"cam={damaged}")
    cam = stats["cameras"]["cam"]
    assert rc == 0 and cam["status"] == "finished", cam
    assert cam["frames_in"] >= SHARE * ffmpeg_frames_or_skip(damaged) and cam["frames_lost"] >= 1, cam
    events = AlertStore(store).camera_events("cam")
    assert any(e.kind == "online" and (e.detail or "").startswith("read through damage: ") for e in events), events


@pytest.mark.slow  # a live UDP camera, 10 s
def test_a_udp_camera_with_corrupted_packets_is_watched_to_its_end_without_a_reconnect(models, tmp_path, capsys):
    frames = 250
    video = write_video(tmp_path / "cam.ts", frames, (480, 360), gop=25)
    camera = LossyUdpCamera(video, 25, frames, corrupt=0.01, drop=0.0)
    camera.start()
    rc, stats, _ = watch(capsys, "--model", models["calm"], "--out-dir", tmp_path / "out", "--timeout", 3,
                         "--max-reconnects", 0, f"cam={camera.url}")
    assert camera.done.is_set() and camera.corrupted >= 1
    cam = stats["cameras"]["cam"]
    # one connection from the first datagram to the stream's end: lost once, when the camera stopped sending
    assert cam["reconnects"] == 0 and cam["drops"] == 1 and cam["error"] == "stream lost: no data for 3 s", cam
    (tmp_path / "sent.ts").write_bytes(camera.sent)
    assert cam["frames_in"] >= SHARE * ffmpeg_frames_or_skip(tmp_path / "sent.ts"), cam
