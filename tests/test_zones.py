"""Zones: which regions count towards a camera's alerts (trainer/serve/alerting/zones.py), and watch holding its
alerts to a camera's required zones."""

import pytest

from data.synthetic import write_wide
from tests.support.watch import models, watch  # noqa: F401  (models is a fixture)
from trainer.serve.alerting.zones import Zone, contains, counting, zones_of

SQUARE = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5))
TRIANGLE = ((0.5, 0.5), (1.0, 1.0), (0.0, 1.0))


@pytest.mark.parametrize("point, inside", [((0.25, 0.25), True), ((0.75, 0.25), False), ((0.5, 0.25), True),
                                           ((0.0, 0.0), True), ((0.25, 0.6), False)])
def test_a_point_in_a_polygon_counts_its_edges(point, inside):
    assert contains(SQUARE, point) is inside


def test_a_box_is_in_the_zones_that_hold_its_bottom_centre():
    zones = [Zone("lobby", "desk", SQUARE, False), Zone("lobby", "floor", TRIANGLE, True)]
    assert zones_of((0.1, 0.1, 0.3, 0.4), zones) == ["desk"]  # foot (0.2, 0.4)
    assert zones_of((0.4, 0.2, 0.6, 0.9), zones) == ["floor"]  # foot (0.5, 0.9): its head is in the desk's square
    assert zones_of((0.8, 0.1, 0.9, 0.2), zones) == []


def test_only_regions_in_a_required_zone_count_and_only_on_its_camera():
    zones = [Zone("lobby", "floor", TRIANGLE, True), Zone("gate", "desk", SQUARE, False)]
    boxes = [(0.2188, 0.0, 0.7812, 1.0), (0.4, 0.2, 0.6, 0.9), (0.0, 0.0, 0.2, 0.3)]
    assert counting("lobby", boxes, zones) == [True, True, False]
    assert counting("gate", boxes, zones) == [True, True, True]  # no required zone: everything counts
    assert counting("lobby", None, zones) == [True]  # no regions: the window cannot be placed


@pytest.mark.parametrize("bad", [dict(polygon=((0, 0), (1, 1))), dict(polygon=((0, 0), (1.5, 0), (1, 1))),
                                 dict(name="")])
def test_a_bad_zone_is_refused(bad):
    with pytest.raises(ValueError):
        Zone(**{**dict(camera="lobby", name="door", polygon=TRIANGLE, required=True), **bad})


@pytest.mark.slow  # watch runs decode threads
@pytest.mark.parametrize("polygon, alerts", [([[0, 0], [1, 0], [1, 1], [0, 1]], 1), ([[0, 0], [0.05, 0], [0, 0.05]], 0)])
def test_watch_raises_alerts_only_where_a_camera_s_required_zone_is(models, tmp_path, capsys, polygon, alerts):
    """The always-fight model: every region is hot, so the camera alerts unless its required zone holds none of
    its regions' feet (a speck in the top-left corner)."""
    video = tmp_path / "wide.mp4"
    write_wide(video, 3, width=320, height=180, fight_width=0.2, calm_before=0.6, fight=1.0, calm_after=0.4)
    zone = f"{{camera: lobby, name: door, polygon: {polygon}, required: true}}"
    rc, stats, events = watch(capsys, "--model", models["fight"], "--no-realtime", "--out-dir", tmp_path / "out",
                              "--set", "watch.regions.budget=2", "--set", f"watch.zones=[{zone}]", f"lobby={video}")
    assert rc == 0 and stats["total"]["alerts"] == alerts
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == alerts and all(len(e["box"]) == 4 for e in starts)


def test_a_zone_of_a_camera_that_is_not_watched_is_an_input_error(models, tmp_path, capsys):
    from data.errors import InputError

    zone = "{camera: hall, name: door, polygon: [[0, 0], [1, 0], [1, 1]], required: true}"
    with pytest.raises(InputError, match="zone door is of camera hall"):
        watch(capsys, "--model", models["fight"], "--set", f"watch.zones=[{zone}]", f"lobby={tmp_path / 'x.mp4'}")
