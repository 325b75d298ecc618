"""Labelled synthetic surveillance-style videos for fight/calm classification.

Each clip is a static textured room (wall, floor, furniture) with stick-and-ellipse
people, per-frame gaussian sensor noise and a slow lighting drift.  Both classes share
the background, figure sizes, colours, noise and lighting distributions, so no
per-frame pixel statistic (brightness, colour) separates them: the cue is motion.
Fighters move several pixels per frame at 64 px scale, jerk, lunge, flail their limbs
and overlap; calm people walk, curve, stand or sit at well under a pixel per frame.

A third scene, ``crowd`` (labelled calm), is fast but harmless: people who run straight across the room and
people who dance on the spot, swinging their arms. A model that has only learnt "fast motion means fight" false-
alarms on it; the demo can train on it as calm (`crowd_share`). A fourth, ``ballgame`` (calm, never trained on by
the demo), is harder: players who sprint after a ball, swerve when it is kicked away and bunch up where it goes,
arms up near it. It is what the operator's feedback loop (mark false positives, retrain) has left to fix.

Wide views (``render_wide``) are what CCTV sees: small people, a fight a fraction of the frame wide among calm
bystanders, anywhere in the frame, with the fight's box in each frame as ground truth for region scoring.

Everything is drawn from ``numpy.random.default_rng(seed)``, so a seed gives
byte-identical frames.  Lengths are in pixels of a 240 px tall frame and scaled by
``_PERSON_SCALE * height / 240`` (in a wide view: so that the fight is ``fight_width`` of the frame wide).
"""

from __future__ import annotations

import cmath
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import av
import numpy as np
from tqdm import tqdm

from data.errors import InputError
from data.views import actor_square

LABELS = ("calm", "fight")  # index = class id; 1 is fight
# scene -> its label; `wide`: render_wide's calm view (small people far from the camera) as a clip; `wide fight`:
# a small fight of a wide view as region scoring shows it to the model (the square around the fighters, data.views)
SCENES = {"calm": "calm", "fight": "fight", "crowd": "calm", "ballgame": "calm", "wide": "calm", "wide fight": "fight"}

# People and their speeds are drawn this much larger than the lengths below: close to the camera, so that
# their motion covers enough pixels for a small network trained from scratch to learn it in the demo's minutes.
_PERSON_SCALE = 1.8
_BODY = (11.0, 21.0)  # body ellipse semi-axes (x, y); body + head + legs is ~0.3 of the frame height
_HEAD_R, _ARM_LEN, _ARM_R, _LEG_LEN, _LEG_R = 8.5, 24.0, 3.5, 22.0, 4.0
# 8-bit uniforms mapped through the normal quantiles: gaussian noise ~4x cheaper than rng.standard_normal
_GAUSS_LUT = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)
_BALL_COLOUR = np.array([235.0, 225.0, 200.0])  # a pale ball
_CALM_RELAX = 0.2  # per-frame pull towards the calm pose/velocity: smooth, and a fight settles in ~10 frames
# A fight's mean width (its box over the fighters' limbs) in person units, by the number of fighters, so that a wide
# scene's people can be scaled to a requested fight width: measured over 300 seeds of render_wide's approach and 6 s
# fight in an unbounded room (per seed, the mean width's standard deviation is 4 units).
_FIGHT_SPAN = {2: 81.0, 3: 96.0}


@dataclass
class _Figure:
    pos: complex  # body centre, x + 1j*y in pixels
    size: float  # pixel scale of this person (frame scale times a personal factor)
    body: np.ndarray  # RGB colours
    skin: np.ndarray
    trousers: np.ndarray
    speed: float  # calm plan: pixels per frame along `heading`, or towards `goal`
    heading: float
    turn: float  # heading change per frame: 0 walks straight, small values curve gently
    goal: complex | None = None
    seated: bool = False
    dance: complex | None = None  # a dancer's spot: she bobs and sways around it, arms swinging to the beat
    chase: bool = False  # a player: runs after the scene's ball
    aim: complex = 0j  # a player's spot beside the ball, in person units: players bunch there, they do not merge
    bystander: bool = False  # stays calm while the others fight
    vel: complex = 0j
    tilt: float = 0.0
    phase: float = 0.0  # gait phase, drives the calm arm and leg swing
    orbit: float = 0.0  # fight: angle of this fighter around the fight centre
    arms: tuple = (0.25, 0.25)  # limb angles from straight down, positive = outwards
    arm_vel: tuple = (0.0, 0.0)
    legs: tuple = (0.12, 0.12)
    leg_vel: tuple = (0.0, 0.0)


def _resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation weights: (n_out, n_in) @ signal upsamples one axis."""
    pos = np.linspace(0, n_in - 1, n_out)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1 - (pos - i0))
    np.add.at(m, (np.arange(n_out), i1), pos - i0)
    return m


def _smooth_noise(rng, height: int, width: int, cells: tuple[int, int], amp: float) -> np.ndarray:
    """Blotchy colour noise: a coarse random grid bilinearly upsampled to the frame."""
    coarse = rng.normal(0, amp, (3, cells[0], cells[1])).astype(np.float32)
    return (_resize_matrix(height, cells[0]) @ coarse @ _resize_matrix(width, cells[1]).T).transpose(1, 2, 0)


def _muted(rng, lo: float, hi: float) -> np.ndarray:
    """A greyish RGB colour with a mild tint, like paint and flooring under CCTV."""
    return np.clip(rng.uniform(lo, hi) + rng.normal(0, 18, 3), 0, 255)


def _background(rng, height: int, width: int) -> np.ndarray:
    """A wall above a floor, textured, with a few rectangles for doors, shelves and furniture."""
    horizon = int(rng.uniform(0.3, 0.45) * height)
    img = np.empty((height, width, 3), np.float32)
    img[:horizon] = _muted(rng, 50, 210)
    img[horizon:] = _muted(rng, 40, 190)
    img += _smooth_noise(rng, height, width, (4, 5), 18) + _smooth_noise(rng, height, width, (24, 32), 6)
    for _ in range(rng.integers(2, 6)):
        w, h = rng.uniform(0.08, 0.3) * width, rng.uniform(0.08, 0.35) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        patch = img[int(y):int(y + h), int(x):int(x + w)]
        patch *= 0.3  # mostly opaque, the texture shows through a little
        patch += 0.7 * _muted(rng, 20, 235)
    return np.clip(img, 0, 255)


class _Canvas:
    """Filled shapes on a float frame; each mask covers only the shape's bounding box."""

    def __init__(self, height: int, width: int):
        self.xs = np.arange(width, dtype=np.float32)
        self.ys = np.arange(height, dtype=np.float32)[:, None]
        self.img: np.ndarray | None = None

    def _box(self, x0: float, y0: float, x1: float, y1: float):
        h, w = self.img.shape[:2]
        c0, c1 = max(int(x0), 0), min(int(x1) + 2, w)
        r0, r1 = max(int(y0), 0), min(int(y1) + 2, h)
        if c0 >= c1 or r0 >= r1:
            return None, None, None
        return (slice(r0, r1), slice(c0, c1)), self.xs[c0:c1], self.ys[r0:r1]

    def ellipse(self, centre: complex, ax: float, ay: float, angle: float, colour) -> None:
        r = max(ax, ay)
        box, xs, ys = self._box(centre.real - r, centre.imag - r, centre.real + r, centre.imag + r)
        if box is None:
            return
        dx, dy, c, s = xs - centre.real, ys - centre.imag, math.cos(angle), math.sin(angle)
        u, v = (dx * c + dy * s) / ax, (dy * c - dx * s) / ay
        self.img[box][u * u + v * v <= 1] = colour

    def segment(self, a: complex, b: complex, radius: float, colour) -> None:
        """A thick line with round caps: pixels within `radius` of segment a-b."""
        box, xs, ys = self._box(min(a.real, b.real) - radius, min(a.imag, b.imag) - radius,
                                max(a.real, b.real) + radius, max(a.imag, b.imag) + radius)
        if box is None:
            return
        d = b - a
        dx, dy = xs - a.real, ys - a.imag
        t = np.clip((dx * d.real + dy * d.imag) / max(abs(d) ** 2, 1e-6), 0, 1)
        ex, ey = dx - t * d.real, dy - t * d.imag
        self.img[box][ex * ex + ey * ey <= radius * radius] = colour

    def figure(self, f: _Figure) -> None:
        for kind, *args in _shapes(f):
            getattr(self, kind)(*args)


def _shapes(f: _Figure) -> list[tuple]:
    """How a person is drawn, back to front: legs, body, arms, head.

    Each shape is ("segment", a, b, radius, colour) or ("ellipse", centre, ax, ay, angle, colour), the arguments of
    the `_Canvas` method of that name, in pixels."""
    s, rot = f.size, cmath.exp(1j * f.tilt)  # body-frame offsets rotate with the torso's tilt
    bx, by = _BODY[0] * s, _BODY[1] * s

    def limb(side: int, root: complex, angle: float, length: float) -> tuple[complex, complex]:
        start = f.pos + root * rot
        return start, start + length * s * complex(side * math.sin(angle), math.cos(angle)) * rot

    shapes = [("segment", *limb(side, complex(side * 0.45 * bx, 0.75 * by), angle, _LEG_LEN), _LEG_R * s, f.trousers)
              for side, angle in zip((-1, 1), f.legs)]
    shapes.append(("ellipse", f.pos, bx, by, f.tilt, f.body))
    shapes += [("segment", *limb(side, complex(side * 0.8 * bx, -0.6 * by), angle, _ARM_LEN), _ARM_R * s, f.body)
               for side, angle in zip((-1, 1), f.arms)]
    shapes.append(("ellipse", f.pos + complex(0, -by - 0.8 * _HEAD_R * s) * rot, _HEAD_R * s, _HEAD_R * s, 0.0, f.skin))
    return shapes


def _extent(f: _Figure) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the bounding box of `_shapes(f)` in pixel coordinates (pixel k's centre is at k)."""
    boxes = []
    for kind, *args in _shapes(f):
        if kind == "segment":
            a, b, r, _ = args
            boxes.append((min(a.real, b.real) - r, min(a.imag, b.imag) - r,
                          max(a.real, b.real) + r, max(a.imag, b.imag) + r))
        else:
            centre, ax, ay, angle, _ = args
            c, s = math.cos(angle), math.sin(angle)
            rx, ry = math.hypot(ax * c, ay * s), math.hypot(ax * s, ay * c)  # half-sides of the rotated ellipse's box
            boxes.append((centre.real - rx, centre.imag - ry, centre.real + rx, centre.imag + ry))
    x0, y0, x1, y1 = zip(*boxes)
    return min(x0), min(y0), max(x1), max(y1)


class _Scene:
    """People plus their motion model; `step(fight)` advances one frame in calm or fight mode.

    `unit` is the pixel scale of people (pixels per length unit above); None is the close-up scale,
    `_PERSON_SCALE * height / 240`."""

    def __init__(self, rng, height: int, width: int, unit: float | None = None):
        self.rng, self.h, self.w = rng, height, width
        if unit is None:
            self.u = _PERSON_SCALE * height / 240
            # body centres stay where head and feet remain in frame
            self.lo, self.hi = complex(0.1 * width, 0.3 * height), complex(0.9 * width, 0.75 * height)
        else:
            self.u = unit
            # small people go anywhere the largest, standing, stays whole in frame: up to the edges of a wide view
            x0, y0, x1, y1 = _extent(_Figure(pos=0j, size=1.1 * unit, body=None, skin=None, trousers=None,
                                             speed=0.0, heading=0.0, turn=0.0))
            self.lo, self.hi = complex(-x0, -y0), complex(width - x1, height - y1)
            if not (self.lo.real < self.hi.real and self.lo.imag < self.hi.imag):
                raise InputError(f"people {y1 - y0:.0f} px tall and {x1 - x0:.0f} px wide do not fit a "
                                 f"{width}x{height} frame")
        self.figures: list[_Figure] = []
        self.fighting = False
        self.centre, self.centre_vel = 0j, 0j
        self.ball: complex | None = None  # a ball game's ball, where the players run
        self.ball_vel = 0j

    def random_pos(self) -> complex:
        x, y = self.rng.uniform(0, 1, 2)
        span = self.hi - self.lo
        return self.lo + complex(x * span.real, y * span.imag)

    def clamp(self, z: complex) -> complex:
        return complex(min(max(z.real, self.lo.real), self.hi.real), min(max(z.imag, self.lo.imag), self.hi.imag))

    def add(self, pos: complex, kind: str, bystander: bool = False) -> _Figure:
        """A person with colours and size from the same distribution whatever the label; `kind` sets the calm plan.

        A bystander keeps to her calm plan when the others fight."""
        rng, u = self.rng, self.u
        skin = np.array([224, 172, 138]) * rng.uniform(0.35, 1.1)
        speed, turn = {
            "walk": (rng.uniform(0.6, 1.5) * u, rng.uniform(-0.004, 0.004)),
            "curve": (rng.uniform(0.5, 1.2) * u, rng.choice([-1, 1]) * rng.uniform(0.006, 0.015)),
            "stand": (rng.uniform(0.05, 0.3) * u, rng.uniform(-0.01, 0.01)),
            "sit": (0.0, 0.0),
            "run": (rng.uniform(4.0, 7.0) * u, rng.uniform(-0.002, 0.002)),  # fighters' speeds, in a straight line
            "dance": (0.0, 0.0),
            "chase": (rng.uniform(4.0, 6.5) * u, 0.0),  # fighters' speeds, but smooth: after the ball
        }[kind]
        f = _Figure(pos=pos, size=u * rng.uniform(0.9, 1.1), body=rng.uniform(15, 240, 3), skin=np.clip(skin, 0, 255),
                    trousers=rng.uniform(15, 200, 3), speed=speed, heading=rng.uniform(0, 2 * math.pi), turn=turn,
                    seated=kind == "sit", phase=rng.uniform(0, 2 * math.pi),
                    dance=pos if kind == "dance" else None, chase=kind == "chase", bystander=bystander)
        if f.seated:
            f.legs = (1.3, 1.3)
        self.figures.append(f)
        return f

    @property
    def fighters(self) -> list[_Figure]:
        """The people who fight while `step(True)`: all but the bystanders."""
        return [f for f in self.figures if not f.bystander]

    def step(self, fight: bool) -> None:
        fighters = self.fighters
        if fight and not self.fighting:
            self.centre = self.clamp(sum(f.pos for f in fighters) / len(fighters))
            for i, f in enumerate(fighters):
                f.orbit = 2 * math.pi * i / len(fighters) + self.rng.uniform(-0.5, 0.5)
        elif not fight and self.fighting:
            for f in fighters:  # the fight breaks up: people walk off or stay
                f.goal, f.seated, f.heading = None, False, self.rng.uniform(0, 2 * math.pi)
                f.speed, f.turn = self.rng.uniform(0.1, 1.4) * self.u, self.rng.uniform(-0.006, 0.006)
        self.fighting = fight
        if self.ball is not None:
            self._ball_step()
        if fight:
            self._fight_step(fighters)
        for f in self.figures:
            if f.bystander or not fight:
                self._calm_step(f)

    def _dance_step(self, f: _Figure) -> None:
        """Regular, not random: a beat of ~2 per second drives the sway, the bounce and big arm swings."""
        f.phase += 2 * math.pi / 12
        beat = math.sin(f.phase)
        f.pos = f.dance + self.u * complex(6 * beat, 3 * abs(math.cos(f.phase)))
        f.tilt = 0.25 * beat
        f.arms = (1.2 + 1.0 * beat, 1.2 - 1.0 * beat)
        f.legs = (0.12 + 0.25 * beat, 0.12 - 0.25 * beat)

    def _ball_step(self) -> None:
        """The ball rolls and slows; a player who reaches it kicks it off in a new direction, off the walls."""
        rng, u = self.rng, self.u
        self.ball_vel *= 0.94
        if any(abs(f.pos - self.ball) < 10 * u for f in self.figures if f.chase) and rng.random() < 0.2:
            self.ball_vel = rng.uniform(4, 8) * u * cmath.exp(1j * rng.uniform(0, 2 * math.pi))
        ball = self.ball + self.ball_vel
        if not self.lo.real <= ball.real <= self.hi.real:
            self.ball_vel = complex(-self.ball_vel.real, self.ball_vel.imag)
        if not self.lo.imag <= ball.imag <= self.hi.imag:
            self.ball_vel = complex(self.ball_vel.real, -self.ball_vel.imag)
        self.ball = self.clamp(ball)

    def _chase_step(self, f: _Figure) -> None:
        """Sprint at the ball, swerving; near it, jostle for it with arms flailing (as fighters' limbs do), which
        is what makes a scramble for a ball look like a fight to a model that has seen none."""
        rng, u = self.rng, self.u
        gap = self.ball + 6 * u * f.aim - f.pos
        want = gap / abs(gap) * min(f.speed, 0.3 * abs(gap)) if abs(gap) > 1e-3 else 0j
        f.vel += 0.25 * (want - f.vel)
        near = abs(gap) < 20 * u
        if near:
            f.vel += complex(*rng.normal(0, 2.5 * u, 2))
            f.arms, f.arm_vel = _flail(rng, f.arms, f.arm_vel, 0.3, -0.3, 2.6)
        f.pos = self.clamp(f.pos + f.vel)
        f.phase += 2 * math.pi * abs(f.vel) / (30 * u)
        swing = math.sin(f.phase)
        if not near:
            f.arms = tuple(a + 0.3 * (t - a) for a, t in zip(f.arms, (0.5 + 0.4 * swing, 0.5 - 0.4 * swing)))
        f.legs = (0.12 + 0.45 * swing, 0.12 - 0.45 * swing)
        f.tilt = 0.7 * f.tilt + 0.3 * float(np.clip(f.vel.real / (10 * u), -0.4, 0.4))

    def _calm_step(self, f: _Figure) -> None:
        if f.chase:
            self._chase_step(f)
            return
        if f.dance is not None:
            self._dance_step(f)
            return
        if f.goal is not None:  # walk to the goal, slowing to a stop on arrival
            gap = f.goal - f.pos
            want = gap / abs(gap) * min(f.speed, 0.05 * abs(gap)) if abs(gap) > 1e-3 else 0j
        else:
            f.heading += f.turn
            want = f.speed * cmath.exp(1j * f.heading)
            # turn back at the room's edges rather than leave the frame
            outward = f.pos - (self.lo + self.hi) / 2
            if not self.lo.real <= f.pos.real <= self.hi.real and outward.real * want.real > 0:
                f.heading, want = math.pi - f.heading, complex(-want.real, want.imag)
            if not self.lo.imag <= f.pos.imag <= self.hi.imag and outward.imag * want.imag > 0:
                f.heading, want = -f.heading, complex(want.real, -want.imag)
        f.vel += _CALM_RELAX * (want - f.vel)
        f.pos += f.vel
        f.phase += 2 * math.pi * abs(f.vel) / (30 * self.u)  # one stride per ~30 px walked
        swing = math.sin(f.phase)
        arms = (0.25 + 0.2 * swing, 0.25 - 0.2 * swing)
        legs = (1.3, 1.3) if f.seated else (0.12 + 0.2 * swing, 0.12 - 0.2 * swing)
        f.arms = tuple(a + _CALM_RELAX * (t - a) for a, t in zip(f.arms, arms))
        f.legs = tuple(a + _CALM_RELAX * (t - a) for a, t in zip(f.legs, legs))
        f.tilt *= 1 - _CALM_RELAX

    def _fight_step(self, fighters: list[_Figure]) -> None:
        """Fighters orbit a drifting centre with heavy random kicks and lunges, so they collide and overlap."""
        rng, u = self.rng, self.u
        self.centre_vel = 0.9 * self.centre_vel + complex(*rng.normal(0, 0.4 * u, 2))
        self.centre = self.clamp(self.centre + self.centre_vel)
        for i, f in enumerate(fighters):
            f.orbit += rng.normal(0, 0.25)
            target = self.centre + 16 * u * complex(math.cos(f.orbit), 0.5 * math.sin(f.orbit))
            kick = rng.normal(0, 8 * u, 2)
            f.vel = 0.6 * f.vel + 0.15 * (target - f.pos) + complex(kick[0], 0.6 * kick[1])
            if rng.random() < 0.12:  # lunge at an opponent
                other = fighters[(i + 1 + rng.integers(len(fighters) - 1)) % len(fighters)]
                gap = other.pos - f.pos
                f.vel += 15 * u * (gap / abs(gap) if abs(gap) > 1e-3 else 1)
            if abs(f.vel) > 25 * u:
                f.vel *= 25 * u / abs(f.vel)
            f.pos = self.clamp(f.pos + f.vel)
            f.tilt = float(np.clip(0.7 * f.tilt + rng.normal(0, 0.12), -0.5, 0.5))
            f.arms, f.arm_vel = _flail(rng, f.arms, f.arm_vel, 0.35, -0.5, 2.8)
            f.legs, f.leg_vel = _flail(rng, f.legs, f.leg_vel, 0.12, -0.2, 1.2)


def _flail(rng, angles: tuple, vels: tuple, kick: float, lo: float, hi: float) -> tuple[tuple, tuple]:
    """Limb angles with random angular kicks, bouncing off the joint's limits."""
    vels = [0.6 * v + rng.normal(0, kick) for v in vels]
    out, out_v = [], []
    for a, v in zip(angles, vels):
        a += v
        if not lo <= a <= hi:
            a, v = min(max(a, lo), hi), -v
        out.append(a)
        out_v.append(v)
    return tuple(out), tuple(out_v)


def _check_size(width: int, height: int, fps: int) -> None:
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise InputError(f"video size {width}x{height}: need even sides of at least 32 (H.264 yuv420p)")
    if fps < 1:
        raise InputError(f"fps {fps}: must be at least 1")


def _frame_count(seconds: float, fps: int, what: str) -> int:
    n = round(seconds * fps)
    if n < 1:
        raise InputError(f"{what} of {seconds} s at {fps} fps is less than one frame")
    return n


def _render(scene: _Scene, fight_per_frame: list[bool], fps: int) -> tuple[np.ndarray, list[dict]]:
    """Step the scene and draw each frame: background, people by depth, lighting, sensor noise.

    Also the fight's box in each fight frame, {"frame": i, "box": [x1, y1, x2, y2]}: the union of the fighters'
    shapes as drawn, as fractions of the frame (0-1, clipped), as AVA gives boxes."""
    rng, h, w, n = scene.rng, scene.h, scene.w, len(fight_per_frame)
    background = _background(rng, h, w)
    t = np.arange(n) / fps
    gain = (1 + rng.uniform(-0.06, 0.06) * (t / max(t[-1], 1e-9) - 0.5)
            + rng.uniform(0.005, 0.02) * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi)))
    noise_lut = _GAUSS_LUT * rng.uniform(1.0, 2.5)  # sensor noise sigma in grey levels
    canvas = _Canvas(h, w)
    frames = np.empty((n, h, w, 3), np.uint8)
    boxes = []
    for i, fight in enumerate(fight_per_frame):
        scene.step(fight)
        canvas.img = background.copy()
        for f in sorted(scene.figures, key=lambda f: f.pos.imag):  # nearer (lower) people occlude farther ones
            canvas.figure(f)
        if scene.ball is not None:  # on the floor, at the players' feet (a body centre's height is ~their middle)
            canvas.ellipse(scene.ball + 30 * scene.u * 1j, 4 * scene.u, 4 * scene.u, 0.0, _BALL_COLOUR)
        canvas.img *= gain[i]
        canvas.img += noise_lut[rng.integers(0, 256, (h, w, 3), dtype=np.uint8)]
        frames[i] = np.clip(canvas.img, 0, 255)
        if fight:
            x0, y0, x1, y1 = zip(*(_extent(f) for f in scene.fighters))
            # pixel k spans [k, k + 1) / size of the frame, so a shape's edge at pixel coordinate x is at x + 0.5
            box = [(min(x0) + 0.5) / w, (min(y0) + 0.5) / h, (max(x1) + 0.5) / w, (max(y1) + 0.5) / h]
            boxes.append({"frame": i, "box": [round(min(max(v, 0.0), 1.0), 4) for v in box]})
    return frames, boxes


def render_clip(scene_kind: str, seconds: float, seed: int,
                width: int = 320, height: int = 240, fps: int = 25) -> np.ndarray:
    """Frames (n, height, width, 3) uint8 RGB of one clip of a scene in SCENES (a label, `crowd`, `ballgame`, `wide`
    or `wide fight`, the last a square of min(width, height))."""
    if scene_kind not in SCENES:
        raise InputError(f"scene {scene_kind!r}: expected one of {', '.join(SCENES)}")
    _check_size(width, height, fps)
    n = _frame_count(seconds, fps, "clip")
    rng = np.random.default_rng(seed)
    if scene_kind == "wide":  # a group walks up and stands among bystanders, people a fraction of the frame wide
        if n < 3:
            raise InputError(f"a wide clip needs 3 frames or more, {seconds} s at {fps} fps is {n}")
        before, group = n // 2, n // 4
        return render_wide(seed, width, height, fight_width=float(rng.uniform(0.1, 0.25)), calm_before=before / fps,
                           fight=group / fps, calm_after=(n - before - group) / fps, fps=fps, calm=True)[0]
    if scene_kind == "wide fight":  # square: the model's view of a region
        return _wide_fight_view(seed, n, min(width, height), fps, float(rng.uniform(0.1, 0.2)))
    scene = _Scene(rng, height, width)
    if scene_kind == "fight":
        centre = scene.random_pos()
        for _ in range(rng.integers(2, 4)):
            scene.add(scene.clamp(centre + complex(*rng.normal(0, 8 * scene.u, 2))), "walk")
    elif scene_kind == "crowd":
        for _ in range(rng.integers(3, 6)):
            scene.add(scene.random_pos(), rng.choice(["run", "dance"]))
    elif scene_kind == "ballgame":
        scene.ball = scene.random_pos()
        for _ in range(rng.integers(3, 5)):
            scene.add(scene.random_pos(), "chase").aim = complex(*rng.normal(0, 0.6, 2))
    else:
        for _ in range(rng.integers(1, 4)):
            scene.add(scene.random_pos(), rng.choice(["walk", "curve", "stand", "sit"]))
    return _render(scene, [scene_kind == "fight"] * n, fps)[0]


def _wide_fight_view(seed: int, n: int, side: int, fps: int, fight_width: float) -> np.ndarray:
    """(n, side, side, 3): a fight `fight_width` of a 960x540 wide view (bystanders around it), cut at one place to
    the square around the fighters over the clip (data.views.actor_square, the squaring regions use) and resized,
    as region scoring shows a small fight to the model."""
    lead = max(1, round(0.5 * fps))  # the fighters walk up for half a second; the clip is their fight
    frames, truth = render_wide(seed, 960, 540, fight_width, calm_before=lead / fps, fight=n / fps,
                                calm_after=1 / fps, fps=fps)
    left, top, right, bottom = actor_square([b["box"] for b in truth["boxes"]], 960, 540)
    return np.stack([av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[top:bottom, left:right]), format="rgb24")
                     .reformat(side, side, interpolation="AREA").to_ndarray() for frame in frames[lead:lead + n]])


def _temp_beside(path: Path) -> Path:
    """A unique temp name next to `path` (same filesystem, so os.replace is atomic); the caller replaces or removes it.

    Not mkstemp: its 0600 mode would stick to the final file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_video(path, frames: np.ndarray, fps: int = 25) -> None:
    """Encode RGB uint8 frames (n, h, w, 3) to an H.264 yuv420p mp4, atomically."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"frames: expected a non-empty uint8 array (n, h, w, 3), got {frames.dtype} {frames.shape}")
    _check_size(frames.shape[2], frames.shape[1], fps)
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.options = {"preset": "veryfast"}  # ~1.5x faster than the default, slightly bigger files
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def render_timeline(seed: int, calm_before: float = 8.0, fight: float = 6.0, calm_after: float = 8.0,
                    width: int = 320, height: int = 240, fps: int = 25) -> tuple[np.ndarray, dict]:
    """Frames of people who walk up to each other, fight, then drift apart, and the ground-truth dict."""
    _check_size(width, height, fps)
    n_before, n_fight = _frame_count(calm_before, fps, "calm_before"), _frame_count(fight, fps, "fight")
    n_after = _frame_count(calm_after, fps, "calm_after")
    rng = np.random.default_rng(seed)
    scene = _Scene(rng, height, width)
    meet = scene.clamp(complex(rng.uniform(0.3, 0.7) * width, rng.uniform(0.45, 0.6) * height))
    n_people = rng.integers(2, 4)
    for i in range(n_people):
        f = scene.add(0j, "walk")
        # they gather in a loose ring, arriving a little before the fight starts
        angle = 2 * math.pi * i / n_people
        f.goal = meet + 18 * scene.u * complex(math.cos(angle), 0.5 * math.sin(angle))
        direction = cmath.exp(1j * rng.uniform(0, 2 * math.pi))
        f.pos = scene.clamp(f.goal + direction * min(rng.uniform(0.25, 0.45) * width, 0.8 * f.speed * n_before))
    frames = _render(scene, [False] * n_before + [True] * n_fight + [False] * n_after, fps)[0]
    truth = {"fps": fps, "frames": len(frames), "seconds": len(frames) / fps, "kind": "timeline",
             "fight_intervals": [[n_before / fps, (n_before + n_fight) / fps]], "seed": seed}
    return frames, truth


def write_timeline(path, seed: int, calm_before: float = 8.0, fight: float = 6.0, calm_after: float = 8.0,
                   width: int = 320, height: int = 240, fps: int = 25) -> dict:
    """`render_timeline` written as an mp4 plus its ground truth at the same path with suffix .json."""
    frames, truth = render_timeline(seed, calm_before, fight, calm_after, width, height, fps)
    _write_with_truth(path, frames, truth, fps)
    return truth


def render_wide(seed: int, width: int = 1280, height: int = 720, fight_width: float = 0.125,
                calm_before: float = 4.0, fight: float = 6.0, calm_after: float = 4.0,
                bystanders: tuple[int, int] = (3, 6), fps: int = 25, calm: bool = False) -> tuple[np.ndarray, dict]:
    """A wide CCTV view: frames of a small fight among calm bystanders, and the ground-truth dict with its boxes.

    Two or three people walk up to each other from anywhere in the frame (its edges too), fight for `fight` seconds,
    then drift apart, while `bystanders` (a range, both ends included) people walk, curve, stand or sit. People are
    scaled so that the fight is about `fight_width` of the frame wide. `calm`: the group meets and stands together
    instead (no fight interval, no boxes); with the same seed, the frames up to the fight's start are the same.

    The truth: fps, frames, seconds, width, height, fight_intervals ([[start, end]] in seconds, [] when calm),
    fight_width, seed, and boxes: {"frame": i, "box": [x1, y1, x2, y2]} for each frame of the fight, the fighters'
    bounding box as fractions of the frame (see `_render`).
    """
    _check_size(width, height, fps)
    if not 0 < fight_width <= 1:
        raise InputError(f"fight_width {fight_width}: must be a fraction of the frame width, in (0, 1]")
    if not 0 <= bystanders[0] <= bystanders[1]:
        raise InputError(f"bystanders {bystanders}: expected a range (lo, hi) with 0 <= lo <= hi")
    n_before, n_fight = _frame_count(calm_before, fps, "calm_before"), _frame_count(fight, fps, "fight")
    n_after = _frame_count(calm_after, fps, "calm_after")
    rng = np.random.default_rng(seed)
    n_fighters = int(rng.integers(2, 4))
    scene = _Scene(rng, height, width, unit=fight_width * width / _FIGHT_SPAN[n_fighters])
    u, meet = scene.u, scene.random_pos()
    for i in range(n_fighters):
        f = scene.add(0j, "walk")
        angle = 2 * math.pi * i / n_fighters  # a loose ring, as in render_timeline
        f.goal = scene.clamp(meet + 18 * u * complex(math.cos(angle), 0.5 * math.sin(angle)))
        direction = cmath.exp(1j * rng.uniform(0, 2 * math.pi))
        f.pos = scene.clamp(f.goal + direction * min(rng.uniform(40, 120) * u, 0.8 * f.speed * n_before))
    for _ in range(rng.integers(bystanders[0], bystanders[1] + 1)):
        for _ in range(10):  # start away from the fight, so that its box holds the fighters, not someone sitting there
            pos = scene.random_pos()
            if abs(pos - meet) > 120 * u:
                break
        scene.add(pos, rng.choice(["walk", "curve", "stand", "sit"]), bystander=True)
    frames, boxes = _render(scene, [False] * n_before + [not calm] * n_fight + [False] * n_after, fps)
    truth = {"fps": fps, "frames": len(frames), "seconds": len(frames) / fps, "width": width, "height": height,
             "kind": "wide calm" if calm else "wide",
             "fight_intervals": [] if calm else [[n_before / fps, (n_before + n_fight) / fps]],
             "fight_width": fight_width, "boxes": boxes, "seed": seed}
    return frames, truth


def write_wide(path, seed: int, **kwargs) -> dict:
    """`render_wide(seed, **kwargs)` written as an mp4 plus its ground truth at the same path with suffix .json."""
    frames, truth = render_wide(seed, **kwargs)
    _write_with_truth(path, frames, truth, truth["fps"])
    return truth


def _write_with_truth(path, frames: np.ndarray, truth: dict, fps: int) -> None:
    """The mp4 at `path`, then `truth` as JSON at the same path with suffix .json, each atomically."""
    path = Path(path)
    write_video(path, frames, fps)
    tmp = _temp_beside(path.with_suffix(".json"))  # written last, so a present .json means a complete pair
    try:
        tmp.write_text(json.dumps(truth, indent=2) + "\n")
        os.replace(tmp, path.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)


def write_scene_clips(out_dir, scene: str, count: int, seed: int, seconds: float = 2.0, width: int = 320,
                      height: int = 240, fps: int = 25) -> list[Path]:
    """`count` clips of `scene` as `out_dir/<scene>_<i:03d>.mp4` (kept when there), held out from any
    generate_dataset: their seeds come from a stream of their own (SeedSequence([seed, 100 + the scene's index,
    i])), so no clip repeats a training one."""
    index = list(SCENES).index(scene) if scene in SCENES else -1
    paths = []
    for i in range(count):
        path = Path(out_dir) / f"{scene}_{i:03d}.mp4"
        if not path.exists():
            video_seed = int(np.random.SeedSequence([seed, 100 + index, i]).generate_state(1)[0])
            write_video(path, render_clip(scene, seconds, video_seed, width, height, fps), fps)
        paths.append(path)
    return paths


def generate_dataset(out_dir, videos_per_class: int, seconds: float, seed: int,
                     width: int = 320, height: int = 240, fps: int = 25, crowd_share: float = 0.0,
                     wide_share: float = 0.0) -> list[dict]:
    """Write `out_dir/<label>/<label>_<i:03d>.mp4` for both labels, skipping files already there. Of the calm ones,
    `crowd_share` are `crowd` scenes instead (fast, harmless) and `wide_share` `wide` ones (small people); of the
    fights, `wide_share` are `wide fight`s (a small fight as a region shows it), each in a sub-folder
    (`calm/crowd/crowd_<i:03d>.mp4`, `calm/wide/...`, `fight/wide_fight/...`), so evaluation reports them apart
    (data/folders.py's kinds). Other videos under the label folders (an earlier run's plan) are removed: the folders
    hold exactly this set."""
    _check_size(width, height, fps)
    _frame_count(seconds, fps, "clip")
    if not (0 <= crowd_share and 0 <= wide_share and crowd_share + wide_share <= 1):
        raise InputError(f"crowd_share {crowd_share} and wide_share {wide_share}: each >= 0, together at most 1")
    crowds, wides = round(videos_per_class * crowd_share), round(videos_per_class * wide_share)
    jobs = [(label_id, label, i) for label_id, label in enumerate(LABELS) for i in range(videos_per_class)]
    entries = []
    for label_id, label, i in tqdm(jobs, desc="synthetic videos", unit="video"):
        # SeedSequence mixes (seed, class, index) into an independent, reproducible stream per video
        video_seed = int(np.random.SeedSequence([seed, label_id, i]).generate_state(1)[0])
        scene = label
        if label == "calm" and i >= videos_per_class - crowds - wides:
            scene = "crowd" if i >= videos_per_class - crowds else "wide"
        elif label == "fight" and i >= videos_per_class - wides:
            scene = "wide fight"
        folder = scene.replace(" ", "_")
        path = Path(out_dir) / label / (f"{folder}/{folder}_{i:03d}.mp4" if scene != label else f"{label}_{i:03d}.mp4")
        if not path.exists():
            write_video(path, render_clip(scene, seconds, video_seed, width, height, fps), fps)
        entries.append({"path": str(path), "label": label, "label_id": label_id, "scene": scene, "seed": video_seed})
    planned = {entry["path"] for entry in entries}
    for label in LABELS:
        for stray in (Path(out_dir) / label).rglob("*.mp4"):
            if str(stray) not in planned:
                stray.unlink()
    return entries
