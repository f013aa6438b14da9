"""A scripted operator: a synthetic person whose right hand solves a sim task through teleoperation.

It sees what a person at the robot would see, with their reaction delay: the task's object poses
and the robot's TCP (forward kinematics of the joint states it is fed). From them a
``TaskExpert`` (lam_control.tasks) picks the next TCP waypoint and gripper state; the operator
moves an intended TCP point toward it at a human speed (drawn per episode) with smooth,
acceleration-limited motion, and places their hand where retargeting maps it onto that point:
the inverse of ``target = robot_shoulder + neutral + scale * A (grip - shoulder)``. Like a person
watching the arm, they correct what they see: while settling on a waypoint, the seen TCP error
is integrated into a bounded offset of the hand.

The body is a complete standing person in the body frame (origin mid-hip, x left, y up, z toward
the camera): face, shoulders, hips, legs, a relaxed left arm, and a right arm whose elbow solves
the two-bone arm for the hand's position, bending back and slightly out. Both hands have the 21
MediaPipe landmarks; the right hand keeps a steady orientation (so the TCP keeps pointing down)
and pinches thumb to index to close the gripper. Human imperfections are seeded: keypoint noise,
landmark dropouts, reaction delay and per-episode speed (``OperatorConfig``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from lam_capture.mocap import _HAND_UVN  # the neutral adult hand the mocap source uses
from lam_capture.skeleton import BODY, LEFT_HAND, NUM_LANDMARKS, RIGHT_HAND, Keypoints
from lam_capture.sources import Frame, Pacer, Source, SourceError, SourceOptions
from lam_control.kinematics import axis_angle_matrix
from lam_control.robot import RobotConfig
from lam_control.tasks import TASKS, ExpertConfig, TaskConfig, TaskExpert
from lam_policy.ik import rotation_error
from lam_policy.retarget import RetargetConfig, Retargeter, read_arm

log = logging.getLogger(__name__)

PALM = (0, 5, 17, 9)  # hand landmarks retargeting averages into the grip point
THUMB_TIP, INDEX_TIP = 4, 8
OBJECT_COUNT = {"reach": 1, "push": 2, "pick_place": 2}


@dataclass
class OperatorConfig:
    """The scripted operator's body, skill and imperfections. Units: m, s, m/s."""

    task: str = "reach"
    seed: int = 0  # combined with each episode's seed
    rate: float = 30.0  # Hz, frames emitted as a Source
    noise: float = 0.01  # m, Gaussian std added to every keypoint coordinate
    # Probability per landmark per frame of confidence 0. Each lost shoulder/elbow/wrist makes
    # retargeting re-anchor the hand orientation on that frame's (noisy) hand, a random walk the
    # operator must then turn out: at 0.003 (arm lost every ~11 s) pick_place succeeds 20/20,
    # at 0.01 (every ~3 s) 15/20 (measured with the teleop-path test's loop).
    dropout: float = 0.003
    reaction_delay: float = 0.2  # s between seeing the scene and acting on it
    speed_range: list[float] = field(default_factory=lambda: [0.15, 0.3])  # m/s TCP, drawn per episode
    accel: float = 1.0  # m/s^2, TCP acceleration limit of the intended motion
    approach_gain: float = 3.0  # 1/s, intended speed per metre to the waypoint (smooth arrival)
    correction_gain: float = 1.5  # 1/s, seen TCP error integrated into the hand offset
    turn_gain: float = 1.0  # 1/s, seen gripper tilt/yaw away from its home orientation turned out
    turn_deadband: float = 0.05  # rad of TCP orientation error a person does not bother to correct
    max_turn: float = 0.6  # rad, the most the wrist turns away from its steady pose to correct
    max_correction: float = 0.08  # m, bound of that offset
    max_height_correction: float = 0.03  # m, bound of its vertical part
    settle_speed: float = 0.05  # m/s, corrections only while the intended motion is slower
    pinch_open: float = 0.085  # m, thumb-index distance of the open hand (gripper opens above 0.05)
    pinch_closed: float = 0.012  # m, of the pinch (gripper closes below 0.03)
    pinch_speed: float = 0.3  # m/s, thumb travel
    upper_arm: float = 0.30  # m
    forearm: float = 0.26  # m
    shoulder_width: float = 0.36  # m
    shoulder_height: float = 0.50  # m above the mid-hip
    sway: float = 0.005  # m, upper-body sway amplitude (the hand follows the shoulder)
    robot: RobotConfig = field(default_factory=RobotConfig)
    retarget: RetargetConfig = field(default_factory=RetargetConfig)  # as policy_node's
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    geometry: TaskConfig = field(default_factory=TaskConfig)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"OperatorConfig.{name} must not be None")
        if self.task not in TASKS:
            raise ValueError(f"OperatorConfig.task must be one of {TASKS}, got {self.task!r}")
        for name in ("rate", "accel", "approach_gain", "pinch_open", "pinch_closed", "pinch_speed",
                     "upper_arm", "forearm", "shoulder_width", "shoulder_height", "settle_speed"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"OperatorConfig.{name} must be finite and > 0, got {value!r}")
        for name in ("noise", "reaction_delay", "correction_gain", "max_correction", "max_height_correction",
                     "sway", "turn_gain",
                     "turn_deadband", "max_turn"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"OperatorConfig.{name} must be finite and >= 0, got {value!r}")
        if not (np.isfinite(self.dropout) and 0 <= self.dropout <= 1):
            raise ValueError(f"OperatorConfig.dropout is a probability in [0, 1], got {self.dropout!r}")
        self.speed_range = [float(v) for v in self.speed_range]
        if len(self.speed_range) != 2 or not 0 < self.speed_range[0] <= self.speed_range[1]:
            raise ValueError(f"OperatorConfig.speed_range must be [low, high] m/s with 0 < low <= high, "
                             f"got {self.speed_range}")
        if self.pinch_closed >= self.pinch_open:
            raise ValueError(f"OperatorConfig.pinch_closed ({self.pinch_closed}) must be below pinch_open "
                             f"({self.pinch_open})")


def inverse_map(retargeter: Retargeter, scale: float, target: np.ndarray, shoulder: np.ndarray) -> np.ndarray:
    """The body-frame grip point that ``retargeter.map_point`` sends to robot point ``target`` (3,)
    for an operator whose shoulder is at ``shoulder`` (3,): the inverse of the retargeting map
    (``axes`` is a rotation or reflection, so its inverse is its transpose)."""
    rel = np.asarray(target, dtype=float) - retargeter.robot_shoulder - retargeter.neutral
    return np.asarray(shoulder, dtype=float) + retargeter.axes.T @ rel / scale


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def solve_elbow(shoulder: np.ndarray, wrist: np.ndarray, upper: float, fore: float,
                hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(elbow, wrist) of a two-bone arm reaching for ``wrist``, the elbow bent toward ``hint``.
    A wrist out of reach is pulled in along the same direction to 99.5 % of the arm's length."""
    d = wrist - shoulder
    dist = float(np.linalg.norm(d))
    axis = _unit(d)
    dist = float(np.clip(dist, abs(upper - fore) + 1e-3, 0.995 * (upper + fore)))
    wrist = shoulder + axis * dist
    along = (upper ** 2 - fore ** 2 + dist ** 2) / (2 * dist)  # law of cosines
    radius = np.sqrt(max(upper ** 2 - along ** 2, 0.0))
    bend = _unit(hint - (hint @ axis) * axis)
    return shoulder + axis * along + bend * radius, wrist


def _hand_points(wrist: np.ndarray, rot: np.ndarray, pinch: float) -> np.ndarray:
    """21 hand landmarks (21, 3): wrist + rot @ (u, v, n); the thumb moved so its tip is ``pinch``
    from the index tip (the rest of the thumb follows part of the way)."""
    uvn = _HAND_UVN.copy()
    index_tip = uvn[INDEX_TIP]
    shift = index_tip + _unit(uvn[THUMB_TIP] - index_tip) * pinch - uvn[THUMB_TIP]
    uvn[THUMB_TIP] += shift
    uvn[3] += 0.6 * shift  # thumb_ip
    uvn[2] += 0.25 * shift  # thumb_mcp
    return wrist + uvn @ rot.T


class ScriptedOperator:
    """The operator as a pure, clock-agnostic core: ``observe`` the scene, ``keypoints(now)``."""

    def __init__(self, config: OperatorConfig | None = None):
        self.config = c = config or OperatorConfig()
        self.retargeter = Retargeter(c.robot, c.retarget)  # for the geometry of the mapping only
        self.model = self.retargeter.model
        self.tcp_index = self.model.link_index[c.robot.ee_link]
        self.n_arm = len(c.robot.joint_names)
        u = _unit(np.array([0.0, -1.0, 0.35]))  # fingers down and a little forward
        v = _unit(np.array([0.0, 0.0, 1.0]) - u[2] * u)  # thumb forward
        self.hand_rot = np.column_stack([u, v, -np.cross(u, v)])  # (3, 3) columns u, v, n (right hand)
        self.right_shoulder = np.array([-c.shoulder_width / 2, c.shoulder_height, 0.0])
        self.scale = self.retargeter.robot_reach / self._own_reach()
        self.home_tcp, self.home_rot = self._fk(c.robot.command_joints, c.robot.home_positions())
        self._lock = threading.Lock()
        self.expert = TaskExpert(c.task, c.geometry, c.expert)
        # Robot-frame rotation the hand applies to correct a seen gripper tilt; kept across
        # episodes, like the retargeter's orientation anchor it compensates.
        self.turn = np.eye(3)
        self.episode_seed: int | None = None
        self.reset(0)

    # -- setup ------------------------------------------------------------------------------
    def _own_reach(self) -> float:
        """Arm length as retargeting measures it (shoulder-elbow-wrist-grip), from a clean frame."""
        grip = self.right_shoulder + np.array([0.0, -0.45, 0.15])  # any pose the arm reaches bent
        points = self._body(grip, self.config.pinch_open, 0.0, self.hand_rot)
        arm = read_arm(Keypoints(points, np.ones(NUM_LANDMARKS), 0.0), "right", 0.0)
        return arm.reach

    def _fk(self, names: list[str], positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation (3, 3) in the base frame for joint values by name."""
        q = np.zeros(len(self.model.joint_names))
        for name, value in zip(names, positions):
            if name in self.model.joint_names:
                q[self.model.joint_names.index(name)] = value
        pose = self.model.forward(q)[self.tcp_index]
        return pose[:3, 3].copy(), pose[:3, :3].copy()

    def reset(self, seed: int) -> None:
        """Start a new episode: a fresh plan, speed and noise stream; the hand returns to where it
        puts the robot at home, and what was seen of the previous episode is forgotten."""
        c = self.config
        with self._lock:
            self.episode_seed = int(seed)
            self.rng = np.random.default_rng([int(c.seed) & 0xFFFFFFFF, int(seed) & 0xFFFFFFFF])
            self.speed = float(self.rng.uniform(*c.speed_range))
            self.phase_offset = float(self.rng.uniform(0, 2 * np.pi))
            self.expert.reset()
            self._seen: deque = deque(maxlen=600)  # (stamp, poses (M, 7), tcp (3,), opening m, rot (3, 3))
            self._intent_log: deque = deque(maxlen=600)  # (time, intended TCP (3,))
            self.intent = self.home_tcp.copy()
            self.velocity = np.zeros(3)
            self.correction = np.zeros(3)
            self.pinch = c.pinch_open
            self.waypoint, self.closed = self.home_tcp.copy(), False
            self._last: float | None = None

    # -- seeing -----------------------------------------------------------------------------
    def observe(self, object_poses: np.ndarray, joint_names: list[str], positions: np.ndarray,
                stamp: float) -> None:
        """Feed the scene at ``stamp`` (s, the clock ``keypoints`` is called with): object poses
        (M, 7) in the task's object order and the robot's joint state by name."""
        poses = np.asarray(object_poses, dtype=float)
        if poses.ndim != 2 or poses.shape != (OBJECT_COUNT[self.config.task], 7) or not np.all(np.isfinite(poses)):
            raise ValueError(f"task {self.config.task} needs object poses of shape "
                             f"({OBJECT_COUNT[self.config.task]}, 7), got {poses.shape}")
        names, positions = list(joint_names), np.asarray(positions, dtype=float)
        tcp, rot = self._fk(names, positions)
        fingers = [positions[names.index(j)] for j in self.config.robot.gripper_joints if j in names]
        opening = float(np.mean(fingers)) if fingers else None
        with self._lock:
            self._seen.append((float(stamp), poses.copy(), tcp, opening, rot))

    def _seen_at(self, t: float):
        """The newest observation made at or before ``t``, or None."""
        for item in reversed(self._seen):
            if item[0] <= t:
                return item
        return None

    def _intent_at(self, t: float) -> np.ndarray:
        for when, point in reversed(self._intent_log):
            if when <= t:
                return point
        return self.intent

    # -- acting -----------------------------------------------------------------------------
    def _act(self, now: float) -> None:
        c = self.config
        dt = 0.0 if self._last is None else float(np.clip(now - self._last, 0.0, 0.1))
        self._last = now
        seen = self._seen_at(now - c.reaction_delay)
        if seen is not None:
            self.waypoint, self.closed = self.expert.step(seen[1], seen[2], now, seen[3])
        wanted = (self.waypoint - self.intent) * c.approach_gain
        wanted *= min(1.0, self.speed / max(float(np.linalg.norm(wanted)), 1e-9))
        dv = wanted - self.velocity
        self.velocity += dv * min(1.0, c.accel * dt / max(float(np.linalg.norm(dv)), 1e-9))
        self.intent = self.intent + self.velocity * dt
        self._intent_log.append((now, self.intent.copy()))
        if seen is not None and np.linalg.norm(self.velocity) < c.settle_speed:
            error = self._intent_at(seen[0]) - seen[2]
            self.correction += c.correction_gain * error * dt
            norm = float(np.linalg.norm(self.correction))
            if norm > c.max_correction:
                self.correction *= c.max_correction / norm
            # Height is bounded tighter: a TCP held up by a cube under a finger must not wind it up.
            self.correction[2] = float(np.clip(self.correction[2], -c.max_height_correction,
                                               c.max_height_correction))
        if seen is not None:  # turn the hand against a seen gripper tilt or yaw
            error = rotation_error(self.home_rot, seen[4])
            angle = float(np.linalg.norm(error))
            if angle > c.turn_deadband:
                step = min(c.turn_gain * dt, 1.0) * angle
                turn = axis_angle_matrix(error / angle, step) @ self.turn
                total = rotation_error(turn, np.eye(3))
                if np.linalg.norm(total) > c.max_turn:  # the wrist's comfortable range
                    turn = axis_angle_matrix(total / np.linalg.norm(total), c.max_turn)
                self.turn = turn
        goal = c.pinch_closed if self.closed else c.pinch_open
        self.pinch += float(np.clip(goal - self.pinch, -c.pinch_speed * dt, c.pinch_speed * dt))

    def current_hand_rot(self) -> np.ndarray:
        """The right hand's axes (3, 3) now: the steady pose, turned by the orientation correction
        (a robot-frame rotation C is the body-frame rotation A^T C A of the hand)."""
        axes = self.retargeter.axes
        return axes.T @ self.turn @ axes @ self.hand_rot

    def _body(self, grip: np.ndarray, pinch: float, now: float, hand_rot: np.ndarray) -> np.ndarray:
        """The whole person (75, 3), the right hand's grip point at ``grip`` relative to the
        unswayed right shoulder."""
        c = self.config
        sway = c.sway * np.array([np.sin(0.6 * now + getattr(self, "phase_offset", 0.0)), 0.0,
                                  np.sin(0.4 * now)])
        pts = np.zeros((NUM_LANDMARKS, 3))
        half_w, sh = c.shoulder_width / 2, c.shoulder_height
        for side, sx in (("left", 1.0), ("right", -1.0)):
            pts[BODY.index(f"{side}_hip")] = [sx * 0.09, 0.0, 0.0]
            pts[BODY.index(f"{side}_knee")] = [sx * 0.09, -0.45, 0.01]
            pts[BODY.index(f"{side}_ankle")] = [sx * 0.09, -0.87, -0.01]
            pts[BODY.index(f"{side}_heel")] = [sx * 0.09, -0.92, -0.06]
            pts[BODY.index(f"{side}_foot_index")] = [sx * 0.10, -0.93, 0.13]
            pts[BODY.index(f"{side}_shoulder")] = [sx * half_w, sh, 0.0] + sway
            pts[BODY.index(f"{side}_ear")] = [sx * 0.075, sh + 0.24, 0.0] + sway
            pts[BODY.index(f"{side}_eye_inner")] = [sx * 0.015, sh + 0.255, 0.09] + sway
            pts[BODY.index(f"{side}_eye")] = [sx * 0.032, sh + 0.257, 0.085] + sway
            pts[BODY.index(f"{side}_eye_outer")] = [sx * 0.048, sh + 0.255, 0.078] + sway
            pts[BODY.index(f"mouth_{side}")] = [sx * 0.025, sh + 0.19, 0.09] + sway
        pts[BODY.index("nose")] = [0.0, sh + 0.22, 0.10] + sway
        # Right arm: the hand where the task needs it, the elbow back and a little out.
        shoulder = pts[BODY.index("right_shoulder")]
        wrist = grip + sway - _HAND_UVN[list(PALM)].mean(axis=0) @ hand_rot.T
        elbow, wrist = solve_elbow(shoulder, wrist, c.upper_arm, c.forearm, np.array([-0.25, -0.3, -1.0]))
        self._place_arm(pts, "right", elbow, wrist, _hand_points(wrist, hand_rot, pinch))
        # Left arm hangs relaxed: the right-side construction mirrored across the body's midline.
        mirror = np.array([-1.0, 1.0, 1.0])
        l_shoulder = pts[BODY.index("left_shoulder")]
        l_wrist = l_shoulder + np.array([0.03, -0.54, 0.06])
        l_elbow, l_wrist = solve_elbow(l_shoulder, l_wrist, c.upper_arm, c.forearm, np.array([0.1, 0.0, -1.0]))
        relaxed = np.column_stack([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
        hand = _hand_points(l_wrist * mirror, relaxed, c.pinch_open * 0.8) * mirror
        self._place_arm(pts, "left", l_elbow, l_wrist, hand)
        return pts

    @staticmethod
    def _place_arm(pts: np.ndarray, side: str, elbow, wrist, hand: np.ndarray) -> None:
        block = LEFT_HAND if side == "left" else RIGHT_HAND
        pts[BODY.index(f"{side}_elbow")] = elbow
        pts[BODY.index(f"{side}_wrist")] = wrist
        pts[block:block + 21] = hand
        pts[BODY.index(f"{side}_pinky")] = hand[17]
        pts[BODY.index(f"{side}_index")] = hand[5]
        pts[BODY.index(f"{side}_thumb")] = hand[3]

    def hand_target(self) -> np.ndarray:
        """The robot point the hand is placed to command now (intended TCP plus correction)."""
        return self.intent + self.correction

    def keypoints(self, now: float) -> Keypoints:
        """The operator at time ``now`` (s): act on what was seen ``reaction_delay`` ago, then
        pose the body; noise and dropouts applied."""
        c = self.config
        with self._lock:
            self._act(now)
            # Not clipped to retargeting's workspace: the correction may have to reach past it to
            # undo a calibration mismatch (the arm's own length still bounds the hand).
            grip = inverse_map(self.retargeter, self.scale, self.hand_target(), self.right_shoulder)
            points = self._body(grip, self.pinch, now, self.current_hand_rot())
            if c.noise > 0:
                points = points + self.rng.normal(0.0, c.noise, points.shape)
            confidence = self.rng.uniform(0.85, 1.0, NUM_LANDMARKS)
            confidence[self.rng.random(NUM_LANDMARKS) < c.dropout] = 0.0
        return Keypoints(points, confidence, float(now))


class ScriptedSource(Source):
    """``scripted:TASK``: the scripted operator as a keypoint source at ``OperatorConfig.rate``
    (monotonic clock). Feed it with ``observe``; ``reset(seed)`` starts an episode. Options:
    ``options.extra['operator']`` is an OperatorConfig (its task is set from the spec)."""

    def __init__(self, task: str, options: SourceOptions | None = None):
        options = options or SourceOptions()
        if task not in TASKS:
            raise SourceError(f"unknown scripted task {task!r}: expected one of {', '.join(TASKS)}")
        base = options.extra.get("operator") or OperatorConfig()
        if not isinstance(base, OperatorConfig):
            raise SourceError(f"scripted source option 'operator' must be an OperatorConfig, got {type(base).__name__}")
        self.operator = ScriptedOperator(replace(base, task=task))
        self.rate = self.operator.config.rate
        self._pacer: Pacer | None = None
        self._index = 0
        self._closed = False

    @property
    def finished(self) -> bool:
        return self._closed

    def observe(self, object_poses, joint_names, positions, stamp: float) -> None:
        self.operator.observe(object_poses, joint_names, positions, stamp)

    def reset(self, seed: int) -> None:
        self.operator.reset(seed)

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._closed:
            return None
        if self._pacer is None:
            self._pacer = Pacer(self.rate)
        if not self._pacer.wait(timeout):
            return None
        stamp = time.monotonic()
        self._index += 1
        return Frame(stamp=stamp, index=self._index - 1, keypoints=self.operator.keypoints(stamp))

    def close(self) -> None:
        self._closed = True
