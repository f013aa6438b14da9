"""Keypoint cleaning: the stage between pose estimation and everything that moves a robot.

Two pure pieces:

- ``OneEuroFilter``: the 1-Euro filter (Casiez, Roussel, Vogel, CHI 2012), elementwise over an
  array of any shape, driven by the real time between samples, with per-element masks so a
  missing landmark keeps its state and is re-initialised (not glided) when it comes back late.
- ``KeypointCleaner``: one ``Keypoints`` in, a clean ``Keypoints`` (or None) out. It gates
  low-confidence and non-finite landmarks, smooths, and refuses implausible frames (another
  person stepping in, a left/right tracking flip): after a rejection nothing is published
  until ``stable_frames`` mutually consistent frames arrive, and then the filter restarts on
  the new pose instead of gliding from the old one.

Guarantees of ``KeypointCleaner.update``: the output is None or NaN-free, with confidences in
[0, 1]; a landmark below ``min_confidence`` or with a non-finite or absurd value has
confidence 0; a frame with no confident landmark publishes nothing (None).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from lam_capture.skeleton import BODY, NUM_LANDMARKS, Keypoints

log = logging.getLogger(__name__)

# Landmarks the jump test compares: shoulders, elbows, wrists, hips. Faces and fingers move
# fast and jitter; legs are often out of frame. Their median speed is the body's speed.
CHECK_LANDMARKS = (11, 12, 13, 14, 15, 16, 23, 24)
# Bones whose lengths identify a person and expose an arm swap: shoulder width, upper arms, forearms.
CHECK_BONES = ((11, 12), (11, 13), (12, 14), (13, 15), (14, 16))
# The two upper arms (indices into CHECK_BONES): an arm swap stretches both at once.
UPPER_ARMS = (1, 2)
MIN_COMMON = 3  # fewer torso/arm landmarks in common than this: compare every common landmark
STATES = ("tracking", "unstable", "lost")
_CHECK_MASK = np.isin(np.arange(NUM_LANDMARKS), CHECK_LANDMARKS)
_BONE_A, _BONE_B = np.array(CHECK_BONES).T


def _check_number(owner: str, name: str, value, minimum: float, *, strict: bool,
                  maximum: float = math.inf) -> None:
    """ValueError naming ``owner.name`` unless value is a finite real in the allowed range."""
    if value is None:
        raise ValueError(f"{owner}.{name} must not be None")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    low_ok = value > minimum if strict else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
        bound = f"{'>' if strict else '>='} {minimum}" + ("" if maximum == math.inf else f" and <= {maximum}")
        raise ValueError(f"{owner}.{name} must be finite and {bound}, got {value!r}")


@dataclass
class OneEuroConfig:
    """1-Euro parameters. Units: Hz, Hz per (unit/s) for ``beta``, s.

    Defaults are for body keypoints in metres at 15-60 Hz, tuned per the authors' recipe
    (beta 0, lower ``min_cutoff`` until the jitter is acceptable, then raise ``beta`` until the
    lag is) on pybullet_data's mocap clips with 1 cm jitter. At rest the cutoff is
    ``min_cutoff`` = 0.5 Hz, which cuts 1 cm of white jitter at 30 Hz 3.3x; moving, it opens by
    ``beta`` Hz per m/s, so a wrist at 1.5 m/s is filtered at 6.5 Hz and lags ~4 cm (25 ms)
    where a fixed 0.5 Hz low-pass (beta 0) would lag ~50 cm.
    ``d_cutoff`` = 1 Hz is the paper's value: the speed estimate must itself be smooth or
    jitter would open the filter at rest. ``reinit_gap`` 0.2 s bridges up to ~5 dropped
    frames at 30 Hz; after longer a wrist may be 30 cm away and smoothing from there would glide.
    """

    min_cutoff: float = 0.5  # Hz, cutoff at rest: lower = smoother and laggier
    beta: float = 4.0  # Hz per unit/s: how fast the cutoff opens with speed (0 = fixed low-pass)
    d_cutoff: float = 1.0  # Hz, cutoff of the speed estimate
    reinit_gap: float = 0.2  # s; an element unseen longer than this restarts from its new value

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "beta", "d_cutoff", "reinit_gap"):
            _check_number("OneEuroConfig", name, getattr(self, name), 0.0, strict=name != "beta")


def _alpha(dt: np.ndarray, cutoff: np.ndarray | float) -> np.ndarray:
    """Smoothing factor of a first-order low-pass at ``cutoff`` Hz over ``dt`` s."""
    r = 2.0 * math.pi * cutoff * dt
    return r / (r + 1.0)


class OneEuroFilter:
    """The 1-Euro filter, elementwise over an array of any fixed shape.

    Each element keeps its own filtered value, speed estimate, last raw value and the stamp of
    its last update, so ``dt`` is the real time since *that element* was last seen. An element
    that is masked out (or non-finite) is not updated and keeps its state; one unseen for more
    than ``reinit_gap`` s (or never seen) starts over from its new value with speed 0. The
    derivative uses the previous *raw* value, as the authors' reference code does, so the
    speed estimate (and the lag on a ramp) does not depend on the sampling rate.

    ``vector_axis``: for arrays of vectors (e.g. (N, 3) points), the axis whose norm is the
    speed that sets the cutoff, so a point moving diagonally is filtered like one moving along
    an axis (None: each element's own speed, as in the paper's scalar filter).
    """

    def __init__(self, config: OneEuroConfig | None = None, vector_axis: int | None = None):
        self.config = config if config is not None else OneEuroConfig()
        self.vector_axis = vector_axis
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next sample is a first sample."""
        self._x: np.ndarray | None = None  # filtered value, input shape
        self._dx: np.ndarray | None = None  # filtered speed, units/s
        self._raw: np.ndarray | None = None  # last raw value taken in
        self._t: np.ndarray | None = None  # stamp of each element's last update; NaN = never
        self._stamp: float | None = None

    @property
    def value(self) -> np.ndarray | None:
        """The current filtered array (0 where never seen), or None before the first sample."""
        return None if self._x is None else self._x.copy()

    def update(self, x: np.ndarray, stamp: float, mask: np.ndarray | None = None) -> np.ndarray:
        """Take in ``x`` (any shape, fixed across calls) sampled at ``stamp`` s.

        ``mask`` (broadcastable to x's shape, True = take this element in) defaults to all.
        Returns the filtered array (same shape); masked-out elements hold their last filtered
        value (0 if never seen). Raises ValueError on a shape change or a non-finite or
        decreasing stamp; a repeated stamp leaves already-updated elements as they are.
        """
        x = np.asarray(x, dtype=float)
        stamp = float(stamp)
        self._check_input(x, stamp)
        if self._x is None:
            self._x, self._dx = np.zeros(x.shape), np.zeros(x.shape)
            self._raw, self._t = np.zeros(x.shape), np.full(x.shape, np.nan)
        take = np.isfinite(x) if mask is None else np.broadcast_to(np.asarray(mask, bool), x.shape) & np.isfinite(x)
        age = stamp - self._t  # NaN where never seen
        with np.errstate(invalid="ignore"):
            recent = age <= self.config.reinit_gap
            smooth = take & recent & (age > 0)
        restart = take & ~recent
        self._smooth(x, age, smooth)
        self._x[restart], self._raw[restart], self._dx[restart] = x[restart], x[restart], 0.0
        self._t[smooth | restart] = stamp
        self._stamp = stamp
        return self._x.copy()

    def _check_input(self, x: np.ndarray, stamp: float) -> None:
        if not math.isfinite(stamp):
            raise ValueError(f"OneEuroFilter stamp must be finite seconds, got {stamp!r}")
        if self._x is not None and x.shape != self._x.shape:
            raise ValueError(f"OneEuroFilter input shape changed from {self._x.shape} to {x.shape}; "
                             "call reset() before filtering a differently shaped signal")
        if self._stamp is not None and stamp < self._stamp:
            raise ValueError(f"OneEuroFilter stamps must not decrease: got {stamp} after {self._stamp}")

    def _smooth(self, x: np.ndarray, age: np.ndarray, sel: np.ndarray) -> None:
        """One 1-Euro step on the selected elements, each with its own dt."""
        cfg = self.config
        dt = np.where(sel, age, 1.0)
        xs = np.where(sel, x, self._raw)  # unselected elements: no change, no NaN
        dx = np.where(sel, self._dx + _alpha(dt, cfg.d_cutoff) * ((xs - self._raw) / dt - self._dx), self._dx)
        speed = np.abs(dx) if self.vector_axis is None else np.linalg.norm(dx, axis=self.vector_axis, keepdims=True)
        alpha = _alpha(dt, cfg.min_cutoff + cfg.beta * speed)
        self._x = np.where(sel, self._x + alpha * (xs - self._x), self._x)
        self._dx, self._raw = dx, xs


@dataclass
class CleanerConfig:
    """Keypoint cleaning parameters. Units: m, m/s, s; confidences in [0, 1].

    ``max_speed`` 3 m/s bounds the *median* speed of shoulders, elbows, wrists and hips: in
    pybullet_data's mocap clips a punch takes the wrists to 4.5 m/s but that median peaks at
    2.8 m/s (dance 3.4 m/s), while another person or a flip moves most of them by tens of
    centimetres in one frame (> 9 m/s at 30 Hz). ``jump_margin`` 5 cm is added for the jitter
    of two frames (~2 cm at 1 cm per axis), which would otherwise trip the test at 60 Hz.
    ``bone_ratio`` 0.3: a person's bones do not change; an arm swap makes both upper arms
    shoulder-to-opposite-elbow segments (+50% or more) and a child is 35% smaller, while 1 cm
    jitter moves a 25 cm forearm by ~6% (3 cm jitter by ~17%, so one bone past the ratio is
    jitter: the test needs the median bone or both upper arms). ``stable_frames`` 5 holds
    ~170 ms at 30 Hz, long enough to see a flicker between two tracks. ``lost_timeout`` 0.5 s:
    after that without a confident landmark the old track says nothing about where the operator is.
    """

    min_confidence: float = 0.5  # landmarks below this are missing (confidence 0)
    one_euro: OneEuroConfig = field(default_factory=OneEuroConfig)
    max_speed: float = 3.0  # m/s, median torso/arm landmark speed above which a frame is a jump
    jump_margin: float = 0.05  # m added to max_speed * dt: the jitter between two noisy frames
    bone_ratio: float = 0.3  # largest relative change of a checked bone length from its estimate
    bone_update: float = 0.05  # weight of each accepted frame in the running bone lengths
    stable_frames: int = 5  # consecutive consistent frames that (re)start publishing
    lost_timeout: float = 0.5  # s without a confident landmark before the track is lost
    max_coordinate: float = 5.0  # m; the body frame is hip-centred, so |x|, |y| or |z| beyond is garbage
    smoothing: bool = True  # One Euro on; off for sources that are already clean (motion capture)

    def __post_init__(self) -> None:
        if self.one_euro is None:
            raise ValueError("CleanerConfig.one_euro must not be None")
        if isinstance(self.one_euro, dict):  # from a parameter file
            self.one_euro = OneEuroConfig(**self.one_euro)
        if not isinstance(self.one_euro, OneEuroConfig):
            raise ValueError(f"CleanerConfig.one_euro must be a OneEuroConfig, got {self.one_euro!r}")
        for name, minimum, strict, maximum in (
                ("min_confidence", 0.0, False, 1.0), ("max_speed", 0.0, True, math.inf),
                ("jump_margin", 0.0, False, math.inf), ("bone_ratio", 0.0, True, math.inf),
                ("bone_update", 0.0, True, 1.0), ("stable_frames", 1, False, math.inf),
                ("lost_timeout", 0.0, True, math.inf), ("max_coordinate", 0.0, True, math.inf)):
            _check_number("CleanerConfig", name, getattr(self, name), minimum, strict=strict, maximum=maximum)
        if int(self.stable_frames) != self.stable_frames:
            raise ValueError(f"CleanerConfig.stable_frames must be a whole number, got {self.stable_frames!r}")
        self.stable_frames = int(self.stable_frames)


@dataclass
class _Reference:
    """What a new frame is compared with: raw points (N, 3), the stamp each was seen (N,)
    (NaN = never) and checked bone lengths (len(CHECK_BONES),) (NaN = unknown)."""

    points: np.ndarray
    stamps: np.ndarray
    bones: np.ndarray

    @classmethod
    def of(cls, points: np.ndarray, valid: np.ndarray, stamp: float) -> _Reference:
        return cls(points.copy(), np.where(valid, stamp, np.nan), _bone_lengths(points, valid))


def _bone_lengths(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Lengths of CHECK_BONES (B,) from points (N, 3); NaN where an end is missing."""
    lengths = np.linalg.norm(points[_BONE_A] - points[_BONE_B], axis=1)
    return np.where(valid[_BONE_A] & valid[_BONE_B], lengths, np.nan)


def consistency(ref: _Reference, points: np.ndarray, valid: np.ndarray, stamp: float,
                config: CleanerConfig) -> str:
    """Why the frame (points (N, 3), valid (N,)) cannot follow ``ref``; '' when it can.

    Jump test: the median over common torso/arm landmarks of displacement / allowed, where
    allowed = max_speed * time since that landmark was seen + jump_margin, must be <= 1.
    Bone test: the median relative change of the checked bones measurable in both, and the
    smaller change of the two upper arms, must be within ``bone_ratio`` of ref's. Another
    person changes every bone, an arm swap both upper arms; keypoint jitter changes bones one
    at a time (at 3 cm per coordinate a forearm often by more than 30%), so a single bone past
    the ratio does not reject a frame.
    """
    age = stamp - ref.stamps
    with np.errstate(invalid="ignore"):
        usable = valid & (age > 0) & (age <= config.lost_timeout)
    common = usable & _CHECK_MASK
    if common.sum() < MIN_COMMON:
        common = usable
    if not common.any():
        return "no landmark in common with the track"
    moved = np.linalg.norm(points[common] - ref.points[common], axis=1)
    allowed = config.max_speed * age[common] + config.jump_margin
    ratio = float(np.median(moved / allowed))
    if ratio > 1.0:
        return f"jump: median landmark moved {ratio:.1f}x the allowed distance"
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.abs(_bone_lengths(points, valid) / ref.bones - 1.0)  # (B,), NaN = not measurable
    known = change[np.isfinite(change)]
    if known.size and float(np.median(known)) > config.bone_ratio:
        return f"bones: median length changed by {float(np.median(known)):.0%} (another person?)"
    upper = change[list(UPPER_ARMS)]
    if np.all(np.isfinite(upper)) and float(upper.min()) > config.bone_ratio:
        return f"bones: both upper arms changed length by {float(upper.min()):.0%} or more (an arm swap?)"
    return ""


def sanitise(kp: Keypoints, config: CleanerConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(points (N, 3), confidence (N,), stamp) of ``kp``, finite, with bad landmarks gated.

    A landmark with a non-finite point or confidence, or a coordinate beyond
    ``max_coordinate``, or confidence below ``min_confidence`` gets confidence 0 and point 0.
    Raises ValueError for anything that is not a BODY frame of the right shape and a finite stamp.
    """
    if not isinstance(kp, Keypoints):
        raise ValueError(f"KeypointCleaner.update needs Keypoints, got {type(kp).__name__}")
    if kp.skeleton.frame_id != BODY.frame_id:
        raise ValueError(f"KeypointCleaner expects the {BODY.frame_id} skeleton, got {kp.skeleton.frame_id}")
    points = np.asarray(kp.points, dtype=float)
    conf = np.asarray(kp.confidence, dtype=float)
    if points.shape != (NUM_LANDMARKS, 3) or conf.shape != (NUM_LANDMARKS,):
        raise ValueError(f"keypoints must be ({NUM_LANDMARKS}, 3) points and ({NUM_LANDMARKS},) "
                         f"confidences, got {points.shape} and {conf.shape}")
    try:
        stamp = float(kp.stamp)
    except (TypeError, ValueError):
        raise ValueError(f"keypoints stamp must be a number of seconds, got {kp.stamp!r}") from None
    if not math.isfinite(stamp):
        raise ValueError(f"keypoints stamp must be finite, got {stamp!r}")
    with np.errstate(invalid="ignore"):
        sane = (np.all(np.abs(points) <= config.max_coordinate, axis=1) & np.isfinite(conf)
                & (conf >= config.min_confidence))
    conf = np.where(sane, np.clip(np.nan_to_num(conf), 0.0, 1.0), 0.0)
    return np.where(sane[:, None], points, 0.0), conf, stamp


class KeypointCleaner:
    """Gate, check and smooth a stream of BODY keypoints (see the module docstring).

    ``state``: 'tracking' (frames are published), 'unstable' (confident frames arrive but are
    held until ``stable_frames`` consecutive ones agree, at start-up and after a rejection) or
    'lost' (no confident landmark for ``lost_timeout`` s, or none yet). Counters for
    diagnostics: ``rejected_frames`` (frames failing the jump or bone test), ``held_frames``
    (confident frames not published while waiting for stability) and ``resets`` (times the
    filter was restarted on a new pose after having had a track).
    """

    def __init__(self, config: CleanerConfig | None = None):
        self.config = config if config is not None else CleanerConfig()
        self.filter = OneEuroFilter(self.config.one_euro, vector_axis=-1)  # speed of each landmark
        self.reset()

    @property
    def state(self) -> str:
        return self._state

    def reset(self) -> None:
        """Back to a freshly constructed cleaner, counters included."""
        self.filter.reset()
        self._state = "lost"
        self.rejected_frames = self.held_frames = self.resets = 0
        self._had_track = False
        self._track: _Reference | None = None  # last accepted raw landmarks and bone estimates
        self._candidate: _Reference | None = None  # last frame of the run awaiting confirmation
        self._run = 0  # length of that run
        # Sum and count (B,) of the run's bone lengths: the candidate's bones are the run's mean,
        # so a frame of the run is compared with one frame's jitter, not two frames'.
        self._run_bones = (np.zeros(len(CHECK_BONES)), np.zeros(len(CHECK_BONES)))
        self._last_stamp: float | None = None  # last frame taken in
        self._seen_stamp: float | None = None  # last frame with a confident landmark

    accepts_missing = True  # CapturePipeline passes None for a frame with no person in it

    def update(self, kp: Keypoints | None) -> Keypoints | None:
        """Clean one frame. Returns the frame to publish, or None to publish nothing.

        None in is a frame with no person (see ``missing``). Raises ValueError on a malformed
        frame (wrong skeleton or shape, non-finite stamp); drops (None) a frame not newer
        than the previous one.
        """
        if kp is None:
            return self.missing()
        points, conf, stamp = sanitise(kp, self.config)
        if not self._advance(stamp):
            return None
        valid = conf > 0
        if not valid.any():
            self._candidate, self._run = None, 0
            return None
        self._seen_stamp = stamp
        if self._state == "tracking":
            reason = consistency(self._track, points, valid, stamp, self.config)
            if not reason:
                return self._accept(kp, points, conf, stamp)
            self.rejected_frames += 1
            self._state = "unstable"
            log.info("keypoints rejected (%s); holding until %d consistent frames",
                     reason, self.config.stable_frames)
        return self._confirm(kp, points, conf, stamp)

    def missing(self, stamp: float | None = None) -> None:
        """A frame with no person: it breaks a run of consistent frames and, given its
        ``stamp`` (s), lets the track expire after ``lost_timeout``. Publishes nothing."""
        if stamp is not None and not math.isfinite(float(stamp)):
            raise ValueError(f"missing() stamp must be finite seconds, got {stamp!r}")
        if stamp is None or self._advance(float(stamp)):
            self._candidate, self._run = None, 0
        return None

    def _advance(self, stamp: float) -> bool:
        """Move the clock to ``stamp``; False (and the frame is dropped) if it is not newer."""
        if self._last_stamp is not None and stamp <= self._last_stamp:
            log.warning("dropping keypoints stamped %.6f, not after the previous %.6f", stamp, self._last_stamp)
            return False
        self._last_stamp = stamp
        self._expire(stamp)
        return True

    def _expire(self, stamp: float) -> None:
        """Lose the track after ``lost_timeout`` s without a confident landmark."""
        if self._state != "lost" and stamp - self._seen_stamp > self.config.lost_timeout:
            log.info("keypoints lost: no confident landmark for %.2f s", stamp - self._seen_stamp)
            self._state = "lost"
            self._candidate, self._run = None, 0

    def _confirm(self, kp: Keypoints, points: np.ndarray, conf: np.ndarray, stamp: float) -> Keypoints | None:
        """Grow (or restart) the run of consistent frames; publish once it is long enough."""
        valid = conf > 0
        if self._candidate is not None:
            reason = consistency(self._candidate, points, valid, stamp, self.config)
            if reason:
                self.rejected_frames += 1
                log.debug("keypoints still unstable (%s)", reason)
            self._run = 1 if reason else self._run + 1
        else:
            self._run = 1
        frame = _Reference.of(points, valid, stamp)
        known = np.isfinite(frame.bones)
        total, count = self._run_bones if self._run > 1 else (np.zeros(known.shape), np.zeros(known.shape))
        total, count = total + np.where(known, frame.bones, 0.0), count + known
        self._run_bones = (total, count)
        frame.bones = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        self._candidate = frame
        self._state = "unstable"
        if self._run < self.config.stable_frames:
            self.held_frames += 1
            return None
        if self._had_track:
            self.resets += 1
        self._had_track = True
        self.filter.reset()
        self._track, self._candidate, self._run = None, None, 0
        self._state = "tracking"
        log.info("keypoints tracking (resets so far: %d)", self.resets)
        out = self._accept(kp, points, conf, stamp)
        self._track.bones = frame.bones.copy()  # the track starts from the run's mean bones
        return out

    def _accept(self, kp: Keypoints, points: np.ndarray, conf: np.ndarray, stamp: float) -> Keypoints:
        """Smooth an accepted frame and fold it into the track reference."""
        valid = conf > 0
        frame = _Reference.of(points, valid, stamp)
        if self._track is None:
            self._track = frame
        else:
            track = self._track
            track.points[valid], track.stamps[valid] = points[valid], stamp
            known = ~np.isnan(frame.bones)
            track.bones[known] = np.where(np.isnan(track.bones[known]), frame.bones[known],
                                          track.bones[known] + self.config.bone_update
                                          * (frame.bones[known] - track.bones[known]))
        if not self.config.smoothing:
            return Keypoints(points=points, confidence=conf, stamp=stamp, skeleton=kp.skeleton)
        smoothed = self.filter.update(points, stamp, mask=valid[:, None])  # (N, 3)
        return Keypoints(points=smoothed, confidence=conf, stamp=stamp, skeleton=kp.skeleton)
