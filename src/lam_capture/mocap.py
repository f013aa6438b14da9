"""Real human motion from a DeepMimic motion-capture clip, as body-frame keypoints.

pybullet_data ships DeepMimic clips (``data/motions/humanoid3d_*.txt``): JSON with ``"Loop"``
(``"wrap"`` or ``"none"``) and ``"Frames"``, each frame 44 numbers:

    duration (s), root position xyz (m), root quaternion, chest quat, neck quat,
    right hip quat, right knee (rad), right ankle quat, right shoulder quat, right elbow (rad),
    left hip quat, left knee (rad), left ankle quat, left shoulder quat, left elbow (rad)

Quaternions are stored w, x, y, z (pybullet's ``humanoid_pose_interpolator`` reorders them to
x, y, z, w before use). The world is y-up (pybullet's DeepMimic env sets gravity along -y), and
the humanoid (``humanoid/humanoid.urdf`` at ``globalScaling=0.25``, as that env loads it, which
makes it metres) faces +x in its root frame, with its right side at +z.

A :class:`HumanoidPoser` poses that humanoid frame by frame in a private PyBullet DIRECT client
and reads its link frames; every one of the 75 landmarks is rigidly attached to one link, so
bone lengths within a link are exactly constant. The body frame is a fixed virtual camera facing
the operator at frame 0 (y = world up, z = the operator's heading at frame 0 on the ground plane,
taken from the pelvis, x = y × z = the operator's left), with the origin at each frame's mid-hip.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lam_control.pybullet_quiet import import_pybullet, quiet_native_output

p = import_pybullet()
import pybullet_data

from lam_capture.skeleton import BODY, HAND_NAMES, NUM_LANDMARKS, Keypoints
from lam_capture.sources import Frame, Pacer, Source, SourceError, SourceOptions

log = logging.getLogger(__name__)

MOTIONS_DIR = Path(pybullet_data.getDataPath()) / "data" / "motions"
HUMANOID_URDF = Path(pybullet_data.getDataPath()) / "humanoid" / "humanoid.urdf"
CLIP_PREFIX = "humanoid3d_"
MODEL_SCALE = 0.25  # pybullet's DeepMimic env loads humanoid.urdf at this globalScaling
FRAME_LENGTH = 44
ROOT_POSITION = slice(1, 4)
ROOT_QUATERNION = slice(4, 8)  # w x y z
# URDF joint -> first column of its value in a frame row: 4 columns (quaternion w x y z) for a
# spherical joint, 1 column (angle, rad) for a revolute one.
JOINT_COLUMNS = {
    "chest": 8, "neck": 12, "right_hip": 16, "right_knee": 20, "right_ankle": 21,
    "right_shoulder": 25, "right_elbow": 29, "left_hip": 30, "left_knee": 34, "left_ankle": 35,
    "left_shoulder": 39, "left_elbow": 43,
}
REVOLUTE_JOINTS = ("right_knee", "right_elbow", "left_knee", "left_elbow")
UP = np.array([0.0, 1.0, 0.0])

# Landmark attachments on the scaled humanoid, right side and midline only; the left side is
# the mirror image (model z negated). Offsets are metres in the link frame, which at rest is
# x forward, y up, z to the right. Face: on the neck link, whose head sphere (r 0.10 m) is
# centred 0.175 m above the neck joint. Feet: on the ankle link, whose foot box spans
# x -0.044..0.134 m with its sole at y -0.05 m.
_ORIGIN = (0.0, 0.0, 0.0)
_POSE_ATTACHMENTS = {
    "nose": ("neck", (0.105, 0.165, 0.0)),
    "right_eye_inner": ("neck", (0.090, 0.200, 0.015)),
    "right_eye": ("neck", (0.085, 0.200, 0.032)),
    "right_eye_outer": ("neck", (0.078, 0.200, 0.047)),
    "right_ear": ("neck", (0.0, 0.185, 0.075)),
    "mouth_right": ("neck", (0.090, 0.130, 0.025)),
    "right_shoulder": ("right_shoulder", _ORIGIN),
    "right_elbow": ("right_elbow", _ORIGIN),
    "right_wrist": ("right_wrist", _ORIGIN),
    "right_hip": ("right_hip", _ORIGIN),
    "right_knee": ("right_knee", _ORIGIN),
    "right_ankle": ("right_ankle", _ORIGIN),
    "right_heel": ("right_ankle", (-0.040, -0.050, 0.0)),
    "right_foot_index": ("right_ankle", (0.130, -0.050, 0.0)),
}
_POSE_FROM_HAND = {"pinky": "pinky_mcp", "index": "index_mcp", "thumb": "thumb_ip"}
# A neutral, slightly curled open adult hand, metres, in (u, v, n): u along the fingers, v toward
# the thumb, n out of the palm. Thumb tip to index tip is 6.3 cm.
_HAND_UVN = np.array([
    (0.0, 0.0, 0.0),  # wrist
    (0.030, 0.022, 0.006), (0.055, 0.040, 0.014), (0.082, 0.050, 0.021), (0.107, 0.052, 0.027),
    (0.090, 0.028, 0.0), (0.128, 0.030, 0.006), (0.150, 0.030, 0.016), (0.166, 0.030, 0.030),
    (0.092, 0.008, 0.0), (0.134, 0.008, 0.006), (0.159, 0.008, 0.017), (0.177, 0.008, 0.032),
    (0.086, -0.011, 0.0), (0.124, -0.012, 0.006), (0.147, -0.012, 0.016), (0.164, -0.012, 0.030),
    (0.078, -0.028, 0.0), (0.106, -0.031, 0.005), (0.123, -0.032, 0.013), (0.138, -0.033, 0.025),
])  # (21, 3)
# Every landmark is rigidly attached to a posed link, so every one is derived: confidence 1.
CONFIDENCE = np.ones(NUM_LANDMARKS)


def _right_hand_offset(hand_landmark: str) -> tuple[float, float, float]:
    """A right-hand landmark in the wrist link frame: fingers continue the forearm (-y), the
    thumb points forward (+x) and the palm faces the body (-z) when the arm hangs at rest."""
    u, v, n = _HAND_UVN[HAND_NAMES.index(hand_landmark)]
    return (v, -u, -n)


def _right_attachment(name: str) -> tuple[str, tuple[float, float, float]]:
    """(link, offset) of a right-side or midline landmark name."""
    if name.startswith("right_hand_"):
        return "right_wrist", _right_hand_offset(name[len("right_hand_"):])
    side, _, part = name.partition("_")
    if side == "right" and part in _POSE_FROM_HAND:
        return "right_wrist", _right_hand_offset(_POSE_FROM_HAND[part])
    return _POSE_ATTACHMENTS[name]


def _attachment_table() -> tuple[tuple[str, ...], np.ndarray]:
    """The link each landmark rides on (N,) and its offset in that link's frame (N, 3)."""
    links, offsets = [], []
    for name in BODY.names:
        if "left" in name:
            link, offset = _right_attachment(name.replace("left", "right", 1))
            link, offset = link.replace("right", "left", 1), (offset[0], offset[1], -offset[2])
        else:
            link, offset = _right_attachment(name)
        links.append(link)
        offsets.append(offset)
    return tuple(links), np.array(offsets, dtype=float)


LANDMARK_LINKS, LANDMARK_OFFSETS = _attachment_table()  # (N,), (N, 3)


@dataclass(frozen=True)
class Clip:
    """A loaded DeepMimic clip. ``frames`` are the file's rows (F, 44), column 0 the duration."""

    name: str
    frames: np.ndarray  # (F, 44)
    durations: np.ndarray  # (F,) s; DeepMimic gives the last frame duration 0
    loop: bool  # the file's "Loop" is "wrap": the motion is meant to cycle
    path: Path

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def times(self) -> np.ndarray:
        """(F,) s: each frame's time in the clip, from 0."""
        return np.concatenate([[0.0], np.cumsum(self.durations[:-1])])

    @property
    def rate(self) -> float:
        """Frames per second: 1 / the median positive frame duration."""
        return float(1.0 / np.median(self.durations[self.durations > 0]))


def available_clips() -> list[str]:
    """Short names (``punch``, ``walk``, ...) of the humanoid clips in pybullet_data."""
    return sorted(f.stem[len(CLIP_PREFIX):] for f in MOTIONS_DIR.glob(f"{CLIP_PREFIX}*.txt"))


def resolve_clip(name_or_path: str | Path) -> Path:
    """The file of a clip given as ``punch``, ``humanoid3d_punch``, ``humanoid3d_punch.txt`` or a
    path. An existing file wins over a clip name. Raises SourceError naming the choices."""
    text = str(name_or_path).strip()
    if not text:
        raise SourceError(f"empty mocap clip name: expected a file path or one of {', '.join(available_clips())}")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.parent != Path("."):
        raise SourceError(f"mocap clip file not found: {path}")
    stem = text.removesuffix(".txt")
    candidate = MOTIONS_DIR / f"{stem if stem.startswith(CLIP_PREFIX) else CLIP_PREFIX + stem}.txt"
    if candidate.is_file():
        return candidate
    raise SourceError(f"unknown mocap clip {text!r}: expected a file path or one of "
                      f"{', '.join(available_clips())}")


def load_clip(name_or_path: str | Path) -> Clip:
    """Read and check a DeepMimic humanoid clip. Raises SourceError naming the file and problem."""
    path = resolve_clip(name_or_path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise SourceError(f"cannot read mocap clip {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise SourceError(f"mocap clip {path} is not JSON ({reason}): expected a DeepMimic motion file") from None
    rows = data.get("Frames") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise SourceError(f"mocap clip {path} has no 'Frames' list: expected a DeepMimic motion file")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != FRAME_LENGTH:
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise SourceError(f"mocap clip {path}: frame {i} has {size} values, expected {FRAME_LENGTH} "
                              "(DeepMimic humanoid: duration, root xyz, 8 quaternions wxyz, 4 angles)")
    try:
        frames = np.array(rows, dtype=float)  # (F, 44)
    except (TypeError, ValueError):
        raise SourceError(f"mocap clip {path} has non-numeric frame values") from None
    _check_frames(frames, path)
    name = path.stem.removeprefix(CLIP_PREFIX)
    return Clip(name=name, frames=frames, durations=frames[:, 0].copy(),
                loop=data.get("Loop") == "wrap", path=path)


def _check_frames(frames: np.ndarray, path: Path) -> None:
    """SourceError for values no pose can be built from."""
    bad = np.argwhere(~np.isfinite(frames))
    if len(bad):
        raise SourceError(f"mocap clip {path}: frame {bad[0][0]} column {bad[0][1]} is not finite")
    if (frames[:, 0] < 0).any() or not (frames[:, 0] > 0).any():
        raise SourceError(f"mocap clip {path}: frame durations must be >= 0 s and not all 0")
    starts = [ROOT_QUATERNION.start] + [c for j, c in JOINT_COLUMNS.items() if j not in REVOLUTE_JOINTS]
    norms = np.stack([np.linalg.norm(frames[:, c:c + 4], axis=1) for c in starts], axis=1)  # (F, 9)
    if (norms < 1e-6).any():
        raise SourceError(f"mocap clip {path}: frame {np.argwhere(norms < 1e-6)[0][0]} has a zero quaternion")


def _slerp(q0: np.ndarray, q1: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Unit quaternions (K, 4) a fraction ``alpha`` (K,) of the way from q0 to q1 (K, 4) along the
    shorter arc; any component order, as long as both use the same."""
    q0 = q0 / np.linalg.norm(q0, axis=1, keepdims=True)
    q1 = q1 / np.linalg.norm(q1, axis=1, keepdims=True)
    dot = np.sum(q0 * q1, axis=1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)  # q and -q are one rotation: take the short way
    angle = np.arccos(np.clip(np.abs(dot), 0.0, 1.0))  # (K,)
    small = angle < 1e-6
    sin = np.where(small, 1.0, np.sin(angle))
    w0 = np.where(small, 1.0 - alpha, np.sin((1.0 - alpha) * angle) / sin)
    w1 = np.where(small, alpha, np.sin(alpha * angle) / sin)
    out = w0[:, None] * q0 + w1[:, None] * q1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def retimed(clip: Clip, speed: float) -> Clip:
    """The clip's motion played at ``speed`` (0.5 = half as fast) and sampled at the clip's own
    frame rate, as a camera would see a slower or faster operator: frame k shows clip time
    k x speed / rate, the root position and the elbow and knee angles interpolated linearly, the
    quaternions by slerp. Every frame lasts 1 / rate s (the last 0, as in DeepMimic files).
    ``speed`` 1 returns the clip unchanged."""
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"mocap speed must be finite and > 0, got {speed!r}")
    if speed == 1.0 or clip.num_frames < 2:
        return clip
    dt = 1.0 / clip.rate
    times = clip.times
    shown = np.arange(int(math.floor(times[-1] / (speed * dt) + 1e-9)) + 1) * speed * dt  # (K,)
    i = np.clip(np.searchsorted(times, shown, side="right") - 1, 0, clip.num_frames - 2)  # (K,)
    span = times[i + 1] - times[i]
    alpha = np.clip(np.divide(shown - times[i], span, out=np.zeros_like(shown), where=span > 0), 0.0, 1.0)
    a, b = clip.frames[i], clip.frames[i + 1]  # (K, 44)
    frames = a + alpha[:, None] * (b - a)  # positions and angles; the quaternions are replaced below
    for c in [ROOT_QUATERNION.start] + [c for j, c in JOINT_COLUMNS.items() if j not in REVOLUTE_JOINTS]:
        frames[:, c:c + 4] = _slerp(a[:, c:c + 4], b[:, c:c + 4], alpha)
    frames[:, 0] = dt
    frames[-1, 0] = 0.0
    return Clip(name=clip.name, frames=frames, durations=frames[:, 0].copy(), loop=clip.loop, path=clip.path)


def _xyzw(wxyz: np.ndarray) -> list[float]:
    """DeepMimic's w, x, y, z quaternion as pybullet's normalised x, y, z, w."""
    q = np.asarray(wxyz, dtype=float)[[1, 2, 3, 0]]
    return list(q / np.linalg.norm(q))


class HumanoidPoser:
    """pybullet_data's DeepMimic humanoid in a private PyBullet DIRECT client: it takes a clip
    frame and gives world poses (y-up, metres) of the links landmarks ride on. Close it (or use
    it as a context manager) to disconnect the client."""

    def __init__(self) -> None:
        self._client = p.connect(p.DIRECT)
        try:
            with quiet_native_output():  # the humanoid's spherical joints draw 'no axis element' warnings
                self._body = p.loadURDF(str(HUMANOID_URDF), useFixedBase=True, globalScaling=MODEL_SCALE,
                                        flags=p.URDF_MAINTAIN_LINK_ORDER, physicsClientId=self._client)
            joints = [p.getJointInfo(self._body, j, physicsClientId=self._client)
                      for j in range(p.getNumJoints(self._body, physicsClientId=self._client))]
        except Exception:
            p.disconnect(physicsClientId=self._client)
            raise
        self._joint = {info[1].decode(): info[0] for info in joints}
        types = {info[1].decode(): info[2] for info in joints}
        for joint in JOINT_COLUMNS:
            want = p.JOINT_REVOLUTE if joint in REVOLUTE_JOINTS else p.JOINT_SPHERICAL
            if types.get(joint) != want:
                self.close()
                raise RuntimeError(f"{HUMANOID_URDF} joint {joint!r} is not the DeepMimic humanoid's: "
                                   f"type {types.get(joint)}, expected {want}")
        self.links = tuple(sorted(set(LANDMARK_LINKS) | {"root"}))
        self._link_ids = [self._joint[link] for link in self.links]

    def link_poses(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pose the humanoid at one clip row (44,); world positions (L, 3) and rotation matrices
        (L, 3, 3) of ``self.links``, in that order."""
        c = self._client
        p.resetBasePositionAndOrientation(self._body, list(frame[ROOT_POSITION]),
                                          _xyzw(frame[ROOT_QUATERNION]), physicsClientId=c)
        for joint, col in JOINT_COLUMNS.items():
            if joint in REVOLUTE_JOINTS:
                p.resetJointState(self._body, self._joint[joint], float(frame[col]), physicsClientId=c)
            else:
                p.resetJointStateMultiDof(self._body, self._joint[joint], _xyzw(frame[col:col + 4]),
                                          physicsClientId=c)
        states = p.getLinkStates(self._body, self._link_ids, computeForwardKinematics=True,
                                 physicsClientId=c)
        positions = np.array([s[4] for s in states])  # (L, 3) URDF link frames, not inertial
        rotations = np.array([p.getMatrixFromQuaternion(s[5]) for s in states]).reshape(-1, 3, 3)
        return positions, rotations

    def close(self) -> None:
        if self._client is not None and p.isConnected(physicsClientId=self._client):
            p.disconnect(physicsClientId=self._client)
        self._client = None

    def __enter__(self) -> "HumanoidPoser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def camera_rotation(root_rotation: np.ndarray) -> np.ndarray:
    """Rows = body axes (left, up, forward) in world, for a camera facing an operator whose root
    rotation (3, 3) is given. The heading comes from the pelvis: its left axis (model -z) on the
    ground plane, forward = left × up. That holds for standing, crawling and lying face up or
    down alike, where the root's own +x may point at the floor; only when the hip line is near
    vertical (lying on one side) does the root's +x on the ground plane give the heading."""
    left = -root_rotation[:, 2] + UP * root_rotation[1, 2]
    if np.linalg.norm(left) >= 0.3:
        forward = np.cross(left, UP)
    else:
        forward = root_rotation[:, 0] - UP * root_rotation[1, 0]
    forward /= np.linalg.norm(forward)
    return np.stack([np.cross(UP, forward), UP, forward])  # (3, 3)


def clip_keypoints(clip: Clip) -> np.ndarray:
    """Every frame's 75 landmarks in the body frame (F, 75, 3), metres."""
    points = np.empty((clip.num_frames, NUM_LANDMARKS, 3))
    with HumanoidPoser() as poser:
        link_row = np.array([poser.links.index(link) for link in LANDMARK_LINKS])  # (N,)
        root = poser.links.index("root")
        camera = None
        for i, frame in enumerate(clip.frames):
            positions, rotations = poser.link_poses(frame)
            world = positions[link_row] + np.einsum("nij,nj->ni", rotations[link_row], LANDMARK_OFFSETS)
            if camera is None:
                camera = camera_rotation(rotations[root])
            mid_hip = 0.5 * (world[BODY.index("left_hip")] + world[BODY.index("right_hip")])
            points[i] = (world - mid_hip) @ camera.T
    return points


class MocapSource(Source):
    """``mocap:CLIP``: a DeepMimic clip replayed as ready keypoints at the clip's own rate.

    ``options.speed`` slows or speeds up the motion, not the camera: the clip is resampled at its
    own rate (:func:`retimed`), so half speed gives twice the frames at the same rate (16-60 Hz
    for the pybullet_data clips). ``clip`` is the resampled clip; its frames are the ones read.

    All keypoints are computed when the source opens (a clip is a few hundred frames), so
    ``read`` only paces and copies. ``Frame.index`` is the clip frame (it restarts at 0 when
    looping). The clip plays once unless ``options.loop``; the file's own ``"Loop": "wrap"``
    does not loop it on its own, so a source always finishes unless asked not to, as ``video:``
    does (``clip.loop`` says whether the motion is meant to cycle).
    """

    def __init__(self, clip: str, options: SourceOptions | None = None):
        options = options or SourceOptions()
        self.clip = retimed(load_clip(clip), options.speed)
        self.speed = options.speed
        self.rate = self.clip.rate  # frames per second of wall time, at any speed
        self._loop = bool(options.loop)
        self._points = clip_keypoints(self.clip)  # (F, 75, 3)
        self._times = self.clip.times
        self._pacer: Pacer | None = None
        self._next = 0
        self._done = False
        self._closed = False
        log.info("mocap clip %s at speed %g: %d frames at %.1f Hz (file Loop %s, looping %s)", self.clip.name,
                 self.speed, self.clip.num_frames, self.rate, "wrap" if self.clip.loop else "none", self._loop)

    @property
    def finished(self) -> bool:
        return self._done or self._closed

    def read(self, timeout: float = 1.0) -> Frame | None:
        """The next clip frame once it is due; None if not due within ``timeout`` s or finished."""
        if self.finished:
            return None
        if self._pacer is None:
            self._pacer = Pacer(self.rate)
        if not self._pacer.wait(timeout):
            return None
        index, stamp = self._next, time.monotonic()
        self._next += 1
        if self._next == self.clip.num_frames:
            self._next = 0
            self._done = not self._loop
        return Frame(stamp=stamp, index=index, keypoints=self.keypoints_at(index, stamp))

    def keypoints_at(self, index: int, stamp: float | None = None) -> Keypoints:
        """Clip frame ``index``'s keypoints, stamped ``stamp`` (default: its time in the clip, s)."""
        if not 0 <= index < self.clip.num_frames:
            raise IndexError(f"clip {self.clip.name} has frames 0..{self.clip.num_frames - 1}, got {index}")
        return Keypoints(self._points[index].copy(), CONFIDENCE.copy(),
                         float(self._times[index] if stamp is None else stamp))

    def all_keypoints(self) -> list[Keypoints]:
        """Every clip frame's keypoints, stamped with its time in the clip (s)."""
        return [self.keypoints_at(i) for i in range(self.clip.num_frames)]

    def close(self) -> None:
        """No device to release (the PyBullet client closed after precomputing); stops reads."""
        self._closed = True
