"""Motion regions of a window (issue 25): noise and lighting are not motion, small movers get square regions
inside the frame, ranked and budgeted, the whole-frame view always first, crops that hold the mover."""

import numpy as np
import pytest

from trainer.serve.runtime.regions import (Box, RegionConfig, box_bottom_centre, centre_square, crop_regions, iou,
                                           motion_boxes, motion_mask, normalised, regions, small_grey)

WIDTH, HEIGHT, FRAMES = 320, 180, 16
JITTER = 3
CFG = RegionConfig()


def scene(seed: int, movers: list[Box] = ()) -> np.ndarray:
    """(FRAMES, HEIGHT, WIDTH, 3) uint8: a fixed textured view with sensor noise (sigma 2.5), a lighting drift
    (gain +1% and +3 levels a frame), and white rectangles at `movers` jittering up to JITTER px a frame."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, (HEIGHT, WIDTH, 3)).astype(float)
    out = []
    for t in range(FRAMES):
        frame = background * (1 + 0.01 * t) + 3 * t + rng.normal(0, 2.5, background.shape)
        for box in movers:
            dx, dy = rng.integers(-JITTER, JITTER + 1, 2)
            frame[max(0, box.y1 + dy) : box.y2 + dy, max(0, box.x1 + dx) : box.x2 + dx] = 255
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(out)


def window_regions(frames: np.ndarray, cfg: RegionConfig = CFG) -> list[Box]:
    """The views of the window's regions."""
    return [region.view for region in regions(small_grey(frames, cfg.motion_side), WIDTH, HEIGHT, cfg)]


def inside(outer: Box, inner: Box) -> bool:
    return outer.x1 <= inner.x1 and outer.y1 <= inner.y1 and inner.x2 <= outer.x2 and inner.y2 <= outer.y2


def grown(box: Box, by: int) -> Box:
    """The box with its jitter: everywhere a mover of `box` can be."""
    return Box(max(0, box.x1 - by), max(0, box.y1 - by), min(WIDTH, box.x2 + by), min(HEIGHT, box.y2 + by))


def check_square_in_frame(region: Box, cfg: RegionConfig = CFG):
    assert region.width == region.height
    assert 0 <= region.x1 and 0 <= region.y1 and region.x2 <= WIDTH and region.y2 <= HEIGHT
    assert cfg.min_side * HEIGHT <= region.width <= HEIGHT


@pytest.mark.parametrize("seed", range(5))
def test_a_static_noisy_scene_with_drifting_light_has_no_motion(seed):
    frames = scene(seed)
    assert not motion_mask(small_grey(frames, CFG.motion_side), CFG.threshold).any()
    assert window_regions(frames) == [centre_square(WIDTH, HEIGHT)]


def test_an_exposure_step_is_not_motion():
    frames = scene(0).astype(int)
    frames[8:] += 40  # the camera's auto exposure, from one frame to the next
    assert window_regions(np.clip(frames, 0, 255).astype(np.uint8)) == [centre_square(WIDTH, HEIGHT)]


def test_a_small_mover_gets_one_square_region_around_it():
    blob = Box(200, 60, 210, 80)
    found = window_regions(scene(0, [blob]))
    assert found[0] == centre_square(WIDTH, HEIGHT) == Box(70, 0, 250, 180)
    assert len(found) == 2
    check_square_in_frame(found[1])
    assert inside(found[1], grown(blob, JITTER))
    assert found[1].width < HEIGHT / 2  # zoomed in: the mover is not squeezed with the whole frame


def test_movers_are_ranked_by_moving_area_and_budgeted():
    small, large = Box(20, 20, 30, 40), Box(250, 110, 280, 150)
    frames = scene(1, [small, large])
    found = window_regions(frames)
    assert len(found) == 3
    assert inside(found[1], grown(large, JITTER)) and inside(found[2], grown(small, JITTER))
    for region in found[1:]:
        check_square_in_frame(region)
    assert window_regions(frames, RegionConfig(budget=1)) == found[:2]
    assert window_regions(frames, RegionConfig(budget=0)) == [centre_square(WIDTH, HEIGHT)]


def test_a_mover_at_the_edge_gets_a_region_shifted_inside_the_frame():
    corner = Box(0, 150, 12, 180)
    found = window_regions(scene(2, [corner]))
    assert len(found) == 2
    check_square_in_frame(found[1])
    assert found[1].x1 == 0 and found[1].y2 == HEIGHT
    assert inside(found[1], grown(corner, JITTER))


def test_near_duplicates_are_dropped():
    # two movers closer than `merge` are one; a mover filling the centre square duplicates the whole-frame view
    assert len(window_regions(scene(3, [Box(100, 60, 110, 80), Box(118, 60, 128, 80)]))) == 2
    assert window_regions(scene(3, [Box(75, 5, 245, 175)]), RegionConfig(context=0)) == [centre_square(WIDTH, HEIGHT)]


def test_normalised_boxes_and_crops_that_hold_the_mover():
    blob = Box(200, 60, 210, 80)
    frames = scene(0, [blob])
    found = window_regions(frames)
    for region in found:
        assert all(0 <= v <= 1 for v in normalised(region, WIDTH, HEIGHT))
    assert normalised(Box(70, 0, 250, 180), WIDTH, HEIGHT) == (0.2188, 0.0, 0.7812, 1.0)

    crops = crop_regions(frames, found, 112)
    assert crops.shape == (2, FRAMES, 112, 112, 3) and crops.dtype == np.uint8
    region = found[1]
    scale = 112 / region.width
    x, y = (205 - region.x1) * scale, (70 - region.y1) * scale  # the blob covers its centre at every jitter
    assert (crops[1, :, int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] >= 250).all()
    assert crops[1].mean() < 200  # the background around it is in the crop too

    # a square already at the model's size is cut as it is
    exact = Box(10, 20, 122, 132)
    assert np.array_equal(crop_regions(frames, [exact], 112)[0], frames[:, 20:132, 10:122])
    assert crop_regions(frames, [], 112).shape == (0, FRAMES, 112, 112, 3)


def test_motion_boxes_join_touching_and_close_movers_and_drop_specks():
    mask = np.zeros((20, 30), bool)
    mask[2:6, 2:6] = True  # 16 px
    mask[6:9, 6:8] = True  # touches the first diagonally: one mover
    mask[12:18, 20:28] = True  # 48 px, the largest
    mask[0, 29] = True  # a speck
    assert motion_boxes(mask) == [(Box(20, 12, 28, 18), 48), (Box(2, 2, 8, 9), 22)]
    assert [mover.box for mover in motion_boxes(mask, merge_gap=12)] == [Box(2, 0, 30, 18)]
    assert motion_boxes(np.zeros((20, 30), bool)) == []


def test_short_windows_have_no_motion():
    grey = np.zeros((2, 10, 10), np.uint8)
    grey[1] = 255
    assert not motion_mask(grey, 10).any()


def test_small_grey_keeps_the_aspect_and_the_short_side():
    assert small_grey(np.zeros((4, 720, 1280, 3), np.uint8), 64).shape == (4, 64, 114)
    assert small_grey(np.zeros((4, 40, 30, 3), np.uint8), 64).shape == (4, 40, 30)  # smaller frames as they are
    grey = small_grey(np.full((1, 90, 160, 3), (255, 0, 0), np.uint8), 64)
    assert (grey == 77).all()  # luma of pure red, BT.601


def test_box_geometry():
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou(Box(0, 0, 10, 10), Box(10, 0, 20, 10)) == 0
    assert iou(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == 0
    assert box_bottom_centre(Box(10, 20, 30, 60)) == (20, 60)
    assert centre_square(180, 320) == Box(0, 70, 180, 250)


@pytest.mark.parametrize("field, value", [
    ("budget", -1), ("motion_side", 8), ("threshold", 0), ("threshold", 255), ("context", -0.1),
    ("min_side", 0), ("min_side", 1.5), ("merge", -0.1), ("merge", 2),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        RegionConfig(**{field: value})


def test_a_region_says_where_it_moved_tighter_than_the_view_it_shows_the_model():
    blob = Box(200, 60, 212, 84)  # jitters a few pixels: what moved spans a little more than the blob
    (whole, region) = regions(small_grey(scene(0, [blob]), CFG.motion_side), WIDTH, HEIGHT, CFG)
    assert whole.moving == whole.view
    assert whole.motion == region.motion > 0  # the blob is all that moves
    assert iou(region.moving, blob) > 0.3 > iou(region.view, blob)
    assert region.view.x1 <= region.moving.x1 and region.moving.x2 <= region.view.x2
