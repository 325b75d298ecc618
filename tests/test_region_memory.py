"""Which views of a live window are scored and which keep a moment-old calm score (region_memory.py)."""

import pytest

from trainer.serve.runtime.region_memory import GROWTH, plan_views
from trainer.serve.runtime.regions import MIN_MOVING_PIXELS, Box, Region

WHOLE = Region(Box(0, 0, 360, 360), Box(0, 0, 360, 360), 40)
LEFT = Region(Box(10, 10, 110, 110), Box(40, 40, 80, 80), 30)
RIGHT = Region(Box(250, 200, 350, 300), Box(280, 230, 320, 270), 10)
RECHECK, CALM = 1.0, 0.25


def scored(memory, regions, start_s, probs):
    """plan_views, then the model's `probs` for the views it scores: the window's probabilities and the memory."""
    scores, to_score, memory = plan_views(memory, regions, start_s, RECHECK, CALM)
    for i in to_score:
        scores[i].prob = probs[i]
    return to_score, [score.prob for score in scores], memory


def test_a_calm_scene_is_scored_once_per_recheck_period():
    to_score, probs, memory = scored([], [WHOLE, LEFT], 0.0, [0.1, 0.2])
    assert to_score == [0, 1]
    for start_s in (0.32, 0.64, 0.96):  # stride 8 at 25 fps: the next three windows keep both scores
        to_score, probs, memory = scored(memory, [WHOLE, LEFT], start_s, [0.9, 0.9])
        assert to_score == [] and probs == [0.1, 0.2]
    to_score, probs, memory = scored(memory, [WHOLE, LEFT], 1.28, [0.15, 0.05])
    assert to_score == [0, 1] and probs == [0.15, 0.05]


def test_new_places_hot_scores_and_growing_motion_are_scored_at_once():
    _, _, memory = scored([], [WHOLE, LEFT], 0.0, [0.1, 0.3])  # LEFT at 0.3: not calm enough to keep
    to_score, probs, memory = scored(memory, [WHOLE, LEFT, RIGHT], 0.32, [0.0, 0.6, 0.05])
    assert to_score == [1, 2] and probs == [0.1, 0.6, 0.05]
    grown = LEFT._replace(motion=int(GROWTH * LEFT.motion) + MIN_MOVING_PIXELS + 1)
    _, _, memory = scored(memory, [WHOLE, LEFT._replace(view=Box(12, 10, 112, 110))], 0.64, [0, 0.1])
    to_score, _, _ = scored(memory, [WHOLE, grown], 0.96, [0.0, 0.9])
    assert to_score == [1]  # the fight that starts where it was calm: more moves there


def test_a_place_that_moved_away_is_a_new_place():
    _, _, memory = scored([], [WHOLE, LEFT], 0.0, [0.1, 0.1])
    moved = LEFT._replace(view=Box(60, 10, 160, 110))  # IoU 1/3 with where it was scored
    assert scored(memory, [WHOLE, moved], 0.32, [0.0, 0.0])[0] == [1]


def test_a_view_queued_but_not_yet_scored_is_not_kept_and_zero_recheck_scores_everything():
    scores, to_score, memory = plan_views([], [WHOLE], 0.0, RECHECK, CALM)
    assert plan_views(memory, [WHOLE], 0.32, RECHECK, CALM).to_score == [0]  # same batch: no score to keep yet
    scores[0].prob = 0.0
    assert plan_views(memory, [WHOLE], 0.32, RECHECK, CALM).to_score == []
    assert plan_views(memory, [WHOLE], 0.32, 0.0, CALM).to_score == [0]


@pytest.mark.parametrize("prob", [float("nan"), 0.25])
def test_a_non_finite_or_borderline_score_is_never_kept(prob):
    _, _, memory = scored([], [WHOLE], 0.0, [prob])
    assert scored(memory, [WHOLE], 0.32, [0.0])[0] == [0]
