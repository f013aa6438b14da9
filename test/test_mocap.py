"""mocap:CLIP turns pybullet_data's real DeepMimic motion capture into body-frame keypoints.

Every humanoid3d clip is posed on the DeepMimic humanoid in PyBullet and mapped onto the 75
landmarks; these tests pin the anatomy (rigid bones, human proportions), the body frame (mid-hip
origin, x = the operator's left, y up, z forward), the replay pacing, and the one-line errors a
bad clip gives.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pybullet as p
import pytest

from lam_capture.mocap import (CLIP_PREFIX, MOTIONS_DIR, HumanoidPoser, MocapSource, available_clips,
                               load_clip, resolve_clip, retimed)
from lam_capture.skeleton import BODY
from lam_capture.sources import SourceError, SourceOptions, open_source

RIGID_TOL_M = 0.01
# The shoulder-to-hip sides of the torso span the humanoid's spherical chest joint: the spine
# bends, so they are not rigid (up to 16 cm of change in the cartwheel).
TORSO_SIDES = {(11, 23), (12, 24)}
TORSO_SIDE_RANGE_M = 0.2
PACE_TOL = 0.15
UPRIGHT = ("dance_a", "dance_b", "jump", "kick", "punch", "run", "spinkick", "walk")


@pytest.fixture(scope="module")
def sources():
    """Every humanoid clip opened once (precomputing all keypoints takes well under a second)."""
    opened = {name: MocapSource(name) for name in available_clips()}
    yield opened
    for source in opened.values():
        source.close()


def _points(source: MocapSource) -> np.ndarray:
    return np.stack([k.points for k in source.all_keypoints()])  # (F, 75, 3)


def _idx(name: str) -> int:
    return BODY.index(name)


def test_every_humanoid_clip_is_found():
    names = available_clips()
    assert len(names) >= 10 and {"punch", "walk", "run", "kick"} <= set(names)
    assert "laikago_walk" not in names  # a quadruped clip, not the humanoid


@pytest.mark.parametrize("spec", ["punch", "humanoid3d_punch", "humanoid3d_punch.txt",
                                  str(MOTIONS_DIR / "humanoid3d_punch.txt")])
def test_resolve_clip_accepts_names_and_paths(spec):
    assert resolve_clip(spec) == MOTIONS_DIR / f"{CLIP_PREFIX}punch.txt"


def test_every_clip_loads_finite_and_fully_confident(sources):
    for name, source in sources.items():
        points = _points(source)
        assert points.shape == (source.clip.num_frames, 75, 3), name
        assert np.isfinite(points).all(), name
        confidence = source.keypoints_at(0).confidence
        assert ((confidence >= 0) & (confidence <= 1)).all() and (confidence == 1).all(), name
        assert 10 <= source.rate <= 120, (name, source.rate)


def test_bones_are_rigid_over_every_clip(sources):
    rigid = np.array([bone not in TORSO_SIDES for bone in BODY.bones])
    torso = np.array([bone in TORSO_SIDES for bone in BODY.bones])
    for name, source in sources.items():
        lengths = np.stack([k.bone_lengths() for k in source.all_keypoints()])  # (F, B)
        assert not np.isnan(lengths).any(), name
        spread = lengths.max(axis=0) - lengths.min(axis=0)
        worst = int(np.argmax(np.where(rigid, spread, 0)))
        assert spread[rigid].max() < RIGID_TOL_M, (name, BODY.bones[worst], spread[worst])
        assert spread[torso].max() < TORSO_SIDE_RANGE_M, (name, spread[torso])


def test_proportions_are_human(sources):
    for name, source in sources.items():
        k = source.keypoints_at(0)
        shoulders = np.linalg.norm(k.point("left_shoulder") - k.point("right_shoulder"))
        assert 0.25 <= shoulders <= 0.5, (name, shoulders)
        for side in ("left", "right"):
            upper_arm = np.linalg.norm(k.point(f"{side}_shoulder") - k.point(f"{side}_elbow"))
            assert 0.2 <= upper_arm <= 0.4, (name, side, upper_arm)
            pinch = np.linalg.norm(k.point(f"{side}_hand_thumb_tip") - k.point(f"{side}_hand_index_tip"))
            assert 0.04 <= pinch <= 0.08, (name, side, pinch)


def test_body_frame_origin_and_axes(sources):
    for name, source in sources.items():
        points = _points(source)
        mid_hip = 0.5 * (points[:, _idx("left_hip")] + points[:, _idx("right_hip")])  # (F, 3)
        assert np.abs(mid_hip).max() < 1e-9, name
        # The camera faces the operator at frame 0: their left shoulder and hip are on +x.
        assert points[0, _idx("left_shoulder"), 0] > 0.05, name
        assert points[0, _idx("left_hip"), 0] > 0.05, name
        assert points[0, _idx("right_shoulder"), 0] < -0.05, name
    for name in UPRIGHT:
        head_height = _points(sources[name])[:, _idx("nose"), 1]
        assert head_height.min() > 0, (name, head_height.min())


def test_neutral_hand_hangs_from_the_wrist_palm_inward(sources):
    k = sources["walk"].keypoints_at(0)  # arms hanging at the sides
    for side, inward in (("right", 1.0), ("left", -1.0)):
        hand = lambda n: k.point(f"{side}_hand_{n}")  # noqa: E731
        forearm = k.point(f"{side}_wrist") - k.point(f"{side}_elbow")
        assert np.allclose(hand("wrist"), k.point(f"{side}_wrist"))
        assert np.dot(hand("middle_mcp") - hand("wrist"), forearm) > 0, side
        assert hand("middle_tip")[1] < hand("wrist")[1] - 0.1, side
        assert hand("thumb_tip")[2] > hand("pinky_mcp")[2], side  # thumb forward
        assert inward * (hand("middle_tip")[0] - hand("middle_mcp")[0]) > 0, side  # curls toward the body


def test_punch_reaches_forward_with_the_right_hand(sources):
    points = _points(sources["punch"])
    reach = points[:, _idx("right_wrist"), 2] - points[:, _idx("right_shoulder"), 2]
    assert reach.max() > 0.2, reach.max()


def test_walk_stays_near_the_mid_hip(sources):
    points = _points(sources["walk"])
    assert np.linalg.norm(points, axis=2).max() < 2.0


def test_poser_disconnects_its_own_client():
    with HumanoidPoser() as poser:
        client = poser._client
        assert p.isConnected(physicsClientId=client)
        positions, rotations = poser.link_poses(load_clip("walk").frames[0])
        assert positions.shape == (len(poser.links), 3) and rotations.shape == (len(poser.links), 3, 3)
    assert not p.isConnected(physicsClientId=client)


def test_source_paces_at_the_clip_rate_and_finishes():
    source = open_source("mocap:walk", SourceOptions(loop=False))
    assert isinstance(source, MocapSource) and source.spec == "mocap:walk"
    frames = [source.read(timeout=1.0)]
    start = time.monotonic()
    frames += [source.read(timeout=1.0) for _ in range(30)]
    elapsed = time.monotonic() - start
    assert abs(elapsed - 30 / source.rate) < PACE_TOL * 30 / source.rate, elapsed
    assert source.read(timeout=0.0) is None  # the next frame is not due yet
    while not source.finished:
        frame = source.read(timeout=1.0)
        frames += [frame] if frame is not None else []
    assert [f.index for f in frames] == list(range(source.clip.num_frames))
    first = frames[0]
    assert first.image is None and first.keypoints.stamp == first.stamp
    assert np.array_equal(first.keypoints.points, source.keypoints_at(0).points)
    t = time.monotonic()
    assert source.read(timeout=1.0) is None and time.monotonic() - t < 0.05
    source.close()


def test_source_loops_when_asked():
    source = MocapSource("run", SourceOptions(loop=True))
    n = source.clip.num_frames
    frames = [source.read(timeout=1.0) for _ in range(n + 2)]
    assert [f.index for f in frames] == list(range(n)) + [0, 1]
    assert np.array_equal(frames[n].keypoints.points, source.keypoints_at(0).points)
    assert not source.finished
    source.close()
    assert source.finished and source.read(timeout=0.1) is None


def test_slower_speed_resamples_the_motion_at_the_camera_rate():
    """Half speed is the same motion over twice the time, still at the clip's 30 Hz: even frames
    are the clip's own, odd ones lie between their neighbours (slerped joints), and the source
    paces at the clip rate rather than at half of it."""
    clip = load_clip("punch")
    half = retimed(clip, 0.5)
    assert half.num_frames == 2 * clip.num_frames - 1 and abs(half.rate - clip.rate) < 1e-9
    assert np.allclose(half.frames[::2, 1:4], clip.frames[:, 1:4], atol=1e-9)
    full = np.stack([k.points for k in MocapSource("punch").all_keypoints()])  # (F, 75, 3)
    source = MocapSource("punch", SourceOptions(speed=0.5))
    slow = np.stack([k.points for k in source.all_keypoints()])  # (2F - 1, 75, 3)
    assert source.rate == clip.rate and len(slow) == len(half.frames)
    assert np.abs(slow[::2] - full).max() < 1e-6  # the clip's own poses, landmarks to a micrometre
    between = np.linalg.norm(slow[1::2] - 0.5 * (full[:-1] + full[1:]), axis=-1)  # (F-1, 75)
    step = np.linalg.norm(full[1:] - full[:-1], axis=-1)  # how far a landmark moves per clip frame
    # Near the chord's middle; off it by the arc's sagitta where a joint turns fast (a slerp, not
    # a straight line: the punching hand moves 19 cm in one frame and passes 2.4 cm off the chord).
    assert np.all(between <= 0.2 * step + 2e-3), (between - 0.2 * step).max()
    hand = _idx("right_wrist"), _idx("right_elbow")
    forearm = np.linalg.norm(slow[:, hand[0]] - slow[:, hand[1]], axis=-1)  # rigid in between too
    assert np.ptp(forearm) < 1e-6, np.ptp(forearm)
    stamps = [k.stamp for k in source.all_keypoints()]
    assert np.allclose(np.diff(stamps), 1.0 / clip.rate)
    twice = retimed(clip, 2.0)
    assert twice.num_frames == (clip.num_frames + 1) // 2
    assert np.allclose(twice.frames[:, 1:4], clip.frames[::2, 1:4], atol=1e-9)
    assert retimed(clip, 1.0) is clip
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="speed"):
            retimed(clip, bad)


def test_slerp_keeps_unit_quaternions_and_takes_the_short_way():
    clip = load_clip("spinkick")  # the fastest rotations of the set
    half = retimed(clip, 0.5)
    for c in (4, 8, 12, 16, 21, 25, 30, 35, 39):
        q = half.frames[:, c:c + 4]
        assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-9)
        a, b = clip.frames[:-1, c:c + 4], clip.frames[1:, c:c + 4]
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        full_angle = 2 * np.arccos(np.clip(np.abs(np.sum(a * b, axis=1)), 0, 1))
        mid_angle = 2 * np.arccos(np.clip(np.abs(np.sum(a * q[1::2], axis=1)), 0, 1))
        assert np.allclose(mid_angle, full_angle / 2, atol=1e-6)  # halfway along the shorter arc


def _write(path, text):
    path.write_text(text)
    return path


def _bad_clips(tmp_path) -> dict:
    real = json.loads((MOTIONS_DIR / "humanoid3d_punch.txt").read_text())
    short = json.loads(json.dumps(real))
    short["Frames"][3] = short["Frames"][3][:-1]
    nan = json.loads(json.dumps(real))
    nan["Frames"][5][10] = float("nan")
    text = (MOTIONS_DIR / "humanoid3d_punch.txt").read_text()
    return {
        "corrupt": (_write(tmp_path / "corrupt.txt", text[:len(text) // 2]), "not JSON"),
        "no_frames": (_write(tmp_path / "no_frames.txt", json.dumps({"Loop": "none"})), "'Frames'"),
        "short_frame": (_write(tmp_path / "short.txt", json.dumps(short)), "frame 3 has 43 values, expected 44"),
        "nan": (_write(tmp_path / "nan.txt", json.dumps(nan)), "frame 5 column 10 is not finite"),
        "missing": (tmp_path / "missing.txt", "not found"),
    }


@pytest.mark.parametrize("case", ["corrupt", "no_frames", "short_frame", "nan", "missing"])
def test_bad_clip_file_is_a_one_line_source_error(tmp_path, case):
    path, problem = _bad_clips(tmp_path)[case]
    with pytest.raises(SourceError) as err:
        MocapSource(str(path))
    message = str(err.value)
    assert "\n" not in message and problem in message and path.name in message, message


def test_unknown_clip_names_the_choices():
    for opener in (lambda: MocapSource("moonwalk"), lambda: open_source("mocap:moonwalk")):
        with pytest.raises(SourceError) as err:
            opener()
        message = str(err.value)
        assert "\n" not in message and "'moonwalk'" in message, message
        assert "punch" in message and "walk" in message, message

