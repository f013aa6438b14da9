"""Retargeting: the operator's arm (shoulder, elbow, wrist, hand) -> a robot TCP target -> IK.

Mapping (operator body frame: x left, y up, z forward; robot base frame: x forward, y left,
z up). The grip point's offset from the shoulder, scaled by robot reach / operator reach, is
placed at the robot's shoulder raised by a neutral offset (a standing person's shoulder is higher
than a table-top arm's): target = robot_shoulder + neutral + scale * A (grip - shoulder) + offset,
kept inside the robot's reach sphere.
``A`` maps body axes to robot axes, or, in mirror mode, to their mirror image (the robot faces
the operator like a mirror). ``offset`` re-anchors whenever commanding (re)starts so the arm never
jumps, then decays to zero so the mapping returns to the absolute one. The hand's orientation
drives the TCP relative to the orientation both had when commanding started. The operator's
elbow direction is the IK's null-space posture for redundant arms.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from lam_capture.skeleton import Keypoints
from lam_control.kinematics import RobotModel
from lam_control.robot import RobotConfig
from lam_policy.gestures import ENGAGE_MODES, Deadman, GripperConfig, PinchGripper, hand_block
from lam_policy.ik import IKConfig, IKSolver, PostureTarget

log = logging.getLogger(__name__)

BODY_TO_ROBOT = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
MIRROR = np.diag([1.0, -1.0, 1.0])  # robot-frame reflection of the left/right axis
WRIST_MIDDLE_MCP, INDEX_MCP, PINKY_MCP = 9, 5, 17  # offsets inside a hand block


@dataclass
class RetargetConfig:
    """Retargeting parameters. Units: m, s."""

    arm: str = "right"  # the operator's arm that drives the robot
    mirror: bool = False  # the robot faces the operator and moves like a mirror image
    robot_shoulder_link: str = "shoulder_pitch_link"  # robot point matched to the operator's shoulder
    robot_elbow_link: str = "elbow_link"  # robot link steered by the operator's elbow ('' = none)
    scale: float = 0.0  # fixed operator->robot scale; 0 = calibrate from arm lengths
    # m, robot frame: where the operator's shoulder sits relative to the robot's. A person stands
    # taller than a table-top arm's shoulder: +0.35 m up puts a relaxed hanging hand at table
    # height, +0.2 m forward keeps arm swings in front of the robot's base.
    neutral_offset: list[float] = field(default_factory=lambda: [0.2, 0.0, 0.35])
    robot_reach: float = 0.0  # m shoulder link -> TCP with the arm straight; 0 = from the URDF
    calibration_frames: int = 10  # frames averaged to measure the operator's arm
    orientation: bool = True  # drive the TCP orientation from the hand
    anchor_decay: float = 1.0  # s time constant of the re-anchoring offset; 0 = keep it
    # m: offsets below this are not anchored; the safety filter ramps such a step smoothly
    # (>= 50 ms at 1 m/s), and the mapping stays absolute instead of drifting back to it.
    anchor_min: float = 0.05
    # s: tracking lost for longer than this re-anchors when it returns; shorter gaps keep the
    # anchor (re-anchoring on every dropped frame drifts the hand-orientation reference).
    reanchor_gap: float = 0.5
    reach_margin: float = 0.98  # targets are kept within this fraction of the robot's reach
    # m, TCP box in the robot base frame (as control_node's safety filter): targets outside it
    # are moved to its surface instead of being left for the filter to stop at.
    workspace_min: list[float] = field(default_factory=lambda: [-0.9, -0.9, 0.05])
    workspace_max: list[float] = field(default_factory=lambda: [0.9, 0.9, 1.3])
    engage: str = "always"  # always | gesture (other hand raised) | service (/lam/engage)
    min_confidence: float = 0.5
    posture_weight: float = 1.0
    # Per-frame IK trust region: no arm joint is asked to move further from its current position
    # than joint_speed_scale x its URDF velocity limit x step_horizon. The safety filter caps
    # joint speed anyway (control.yaml velocity_scale); a farther IK solution would be
    # approached joint by joint, each at its own cap, along a path the operator never drew.
    # Bounded, the IK moves the joints that can still move. joint_speed_scale 0 = unbounded.
    joint_speed_scale: float = 0.5  # fraction of the URDF velocity limits, as the safety filter
    step_horizon: float = 0.1  # s of motion at that speed one frame may command
    # An arm slower than the operator (the safety caps) follows the operator's path rather than
    # cutting straight across to the newest point: it aims path_lookahead m ahead of its own
    # position along the path shown in the last path_lag s. When it keeps up, that is the newest
    # point (no added lag); it never falls further behind than path_lag. path_lag 0 = always aim
    # at the newest point. Measured in simulated time (lam_policy.mimic_rollout, the 15 clean
    # clips), 0.2 s against 0: path deviation mean 137 -> 114 mm, lower on 13 of 15 (walk 32 -> 19,
    # crawl 25 -> 22, kick 82 -> 67, dance_a 260 -> 148; getup_faceup 55 -> 62), time-aligned error
    # 349 -> 388 mm. With keypoint noise (2 cm, dropout 0.05, occlusion 0.5/s) 156 -> 150 mm.
    # 0.3 s was no better on path (112 mm) and worse on time (404 mm).
    path_lag: float = 0.2  # s
    path_lookahead: float = 0.08  # m
    # Teleop solves are warm (seeded with the arm's state): no random restarts, which could jump
    # to another IK branch, and a short iteration budget (measured: 2-5 ms per frame).
    ik: IKConfig = field(default_factory=lambda: IKConfig(restarts=0, max_iterations=15, orientation_weight=0.05))
    gripper: GripperConfig = field(default_factory=GripperConfig)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"RetargetConfig.{name} must not be None")
        if self.arm not in ("left", "right"):
            raise ValueError(f"RetargetConfig.arm must be 'left' or 'right', got {self.arm!r}")
        if self.engage not in ENGAGE_MODES:
            raise ValueError(f"RetargetConfig.engage must be one of {ENGAGE_MODES}, got {self.engage!r}")
        self.workspace_min = [float(v) for v in self.workspace_min]
        self.workspace_max = [float(v) for v in self.workspace_max]
        if len(self.workspace_min) != 3 or len(self.workspace_max) != 3 or \
                not np.all(np.less(self.workspace_min, self.workspace_max)):
            raise ValueError(f"RetargetConfig.workspace_min/max must be xyz with min < max, got "
                             f"{self.workspace_min} / {self.workspace_max}")
        self.neutral_offset = [float(v) for v in self.neutral_offset]
        if len(self.neutral_offset) != 3 or not np.all(np.isfinite(self.neutral_offset)):
            raise ValueError(f"RetargetConfig.neutral_offset must be 3 finite metres, got {self.neutral_offset}")
        if not 0 < self.reach_margin <= 1:
            raise ValueError(f"RetargetConfig.reach_margin must be in (0, 1], got {self.reach_margin!r}")
        for name in ("scale", "robot_reach", "anchor_decay", "anchor_min", "reanchor_gap", "posture_weight",
                     "joint_speed_scale",
                     "step_horizon", "path_lag", "path_lookahead"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"RetargetConfig.{name} must be finite and >= 0, got {value!r}")
        if self.calibration_frames < 1:
            raise ValueError(f"RetargetConfig.calibration_frames must be >= 1, got {self.calibration_frames}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"RetargetConfig.min_confidence must be in [0, 1], got {self.min_confidence}")


@dataclass
class OperatorArm:
    """The driving arm in the body frame (m); ``hand_rot`` (3, 3) columns x, y, z or None."""

    shoulder: np.ndarray
    elbow: np.ndarray
    wrist: np.ndarray
    grip: np.ndarray
    hand_rot: np.ndarray | None

    @property
    def reach(self) -> float:
        return float(np.linalg.norm(self.elbow - self.shoulder) + np.linalg.norm(self.wrist - self.elbow)
                     + np.linalg.norm(self.grip - self.wrist))


def read_arm(kp: Keypoints, arm: str, min_confidence: float) -> OperatorArm | None:
    """The driving arm's landmarks, or None when shoulder, elbow or wrist is not tracked."""
    s, e, w = (kp.skeleton.index(f"{arm}_{j}") for j in ("shoulder", "elbow", "wrist"))
    if min(kp.confidence[[s, e, w]]) < min_confidence:
        return None
    block = hand_block(arm)
    palm = [block, block + INDEX_MCP, block + PINKY_MCP, block + WRIST_MIDDLE_MCP]
    hand_rot = None
    if min(kp.confidence[palm]) >= min_confidence:
        pts = kp.points
        grip = pts[palm].mean(axis=0)
        z = pts[block + WRIST_MIDDLE_MCP] - pts[block]
        y = pts[block + INDEX_MCP] - pts[block + PINKY_MCP]
        hand_rot = _frame(z, y)
    else:  # no hand model: the grip point continues the forearm by a hand's length
        forearm = kp.points[w] - kp.points[e]
        grip = kp.points[w] + 0.08 * forearm / max(np.linalg.norm(forearm), 1e-6)
    return OperatorArm(kp.points[s].copy(), kp.points[e].copy(), kp.points[w].copy(), grip, hand_rot)


def _frame(z: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Right-handed frame (3, 3) with z along ``z`` and y as close to ``y`` as orthogonality allows."""
    nz = np.linalg.norm(z)
    if nz < 1e-6:
        return None
    z = z / nz
    y = y - (y @ z) * z
    ny = np.linalg.norm(y)
    if ny < 1e-6:
        return None
    y = y / ny
    return np.column_stack([np.cross(y, z), y, z])


class PathFollower:
    """The operator's recent path and a pursuit point on it for an arm that may lag behind.

    ``add`` appends a target (3,) with a payload (what goes with it: orientation, posture);
    ``aim`` projects the TCP (3,) onto the path shown since ``max(progress, now - lag)`` (the
    arm's progress never goes back) and returns the point ``lookahead`` m further along it (the
    newest point when the path ends sooner) with the payload of the first sample at or after it.
    """

    def __init__(self, lag: float, lookahead: float):
        self.lag, self.lookahead = lag, lookahead
        self.reset()

    def reset(self) -> None:
        self.times: list[float] = []
        self.points: list[np.ndarray] = []
        self.payloads: list = []
        self.progress = -np.inf  # s: time along the path the arm has reached

    def add(self, now: float, point: np.ndarray, payload=None) -> None:
        self.times.append(now)
        self.points.append(np.asarray(point, dtype=float))
        self.payloads.append(payload)

    def aim(self, tcp: np.ndarray, now: float) -> tuple[np.ndarray, object]:
        start = max(self.progress, now - self.lag)
        while len(self.times) > 1 and self.times[1] <= start:  # drop samples before the start
            del self.times[0], self.points[0], self.payloads[0]
        times, pts = np.asarray(self.times), np.array(self.points)  # (m,), (m, 3)
        if len(times) > 1 and times[0] < start:  # the path begins at its point at ``start``
            f = (start - times[0]) / (times[1] - times[0])
            times[0], pts[0] = start, pts[0] + f * (pts[1] - pts[0])
        if len(times) < 2 or self.lag <= 0:
            return self.points[-1], self.payloads[-1]
        seg = pts[1:] - pts[:-1]  # (m-1, 3)
        length = np.linalg.norm(seg, axis=1)  # (m-1,)
        frac = np.clip(np.einsum("ij,ij->i", tcp - pts[:-1], seg) / np.maximum(length**2, 1e-18), 0.0, 1.0)
        j = int(np.argmin(np.linalg.norm(pts[:-1] + frac[:, None] * seg - tcp, axis=1)))  # nearest segment
        self.progress = max(self.progress, times[j] + frac[j] * (times[j + 1] - times[j]))
        cum = np.concatenate([[0.0], np.cumsum(length)])  # (m,) arc length at each sample
        s_aim = cum[j] + frac[j] * length[j] + self.lookahead
        if s_aim >= cum[-1]:
            return self.points[-1], self.payloads[-1]
        k = int(np.searchsorted(cum, s_aim, side="right")) - 1
        point = pts[k] + (s_aim - cum[k]) / max(length[k], 1e-18) * seg[k]
        return point, self.payloads[int(np.searchsorted(cum, s_aim, side="left"))]  # the sample at or after it


@dataclass
class RetargetResult:
    """One command: ``q`` over the robot's command joints (arm then gripper)."""

    q: np.ndarray
    target_position: np.ndarray  # (3,) TCP target actually solved for (offset included)
    absolute_target: np.ndarray  # (3,) scaled operator grip path, no anchoring offset
    target_rotation: np.ndarray | None
    position_error: float  # m between the IK solution's TCP and the target
    reachable: bool  # IK reached the target, or is on its way (stopped by the per-frame trust region)
    gripper_closed: bool


class Retargeter:
    """Operator keypoints -> joint commands for one robot (any URDF RobotConfig accepts)."""

    def __init__(self, robot: RobotConfig, config: RetargetConfig | None = None,
                 model: RobotModel | None = None):
        self.robot, self.config = robot, config or RetargetConfig()
        self.model = model or robot.load_model()
        c = self.config
        for link in filter(None, (c.robot_shoulder_link, c.robot_elbow_link)):
            if link not in self.model.link_index:
                raise ValueError(f"retarget link {link!r} is not in {robot.urdf_path().name}; links: "
                                 f"{self.model.link_names}")
        self.ik = IKSolver(self.model, robot.joint_names, robot.ee_link, c.ik)
        self.n_cmd = len(robot.command_joints)
        arm_velocity = self.model.velocity[[self.model.joint_names.index(j) for j in robot.joint_names]]
        trust = c.joint_speed_scale * c.step_horizon * arm_velocity  # (a,) rad
        self.max_change = trust if c.joint_speed_scale > 0 and c.step_horizon > 0 else None
        self._pad = np.zeros(len(self.model.joint_names) - self.n_cmd)  # joints beyond the command set
        self.axes = (MIRROR @ BODY_TO_ROBOT) if c.mirror else BODY_TO_ROBOT
        self.robot_shoulder = self._link_pose(np.zeros(self.n_cmd), c.robot_shoulder_link)[:3, 3]
        self.neutral = np.asarray(c.neutral_offset, dtype=float)
        self.robot_reach = c.robot_reach or self._straight_reach()
        self.deadman = Deadman(c.engage, c.arm)
        self.gripper = PinchGripper(c.gripper)
        self._reaches: list[float] = []
        self.scale = c.scale or None
        self._anchor: tuple[np.ndarray, np.ndarray | None, float] | None = None  # offset, rot align, t
        self.path = PathFollower(c.path_lag, c.path_lookahead)
        self.active = False
        self._lost_since: float | None = None

    # -- geometry ---------------------------------------------------------------------------
    def full(self, q_cmd: np.ndarray) -> np.ndarray:
        """A command-joint vector extended to the model's full configuration (other joints 0)."""
        return np.concatenate([q_cmd, self._pad])

    def _link_pose(self, q_cmd: np.ndarray, link: str) -> np.ndarray:
        return self.model.forward(self.full(q_cmd))[self.model.link_index[link]]

    def _straight_reach(self) -> float:
        q = np.clip(np.zeros(self.n_cmd), self.model.lower[: self.n_cmd], self.model.upper[: self.n_cmd])
        return float(np.linalg.norm(self._link_pose(q, self.robot.ee_link)[:3, 3] - self.robot_shoulder))

    def map_point(self, body_point: np.ndarray, shoulder: np.ndarray) -> np.ndarray:
        """A body-frame point, relative to the operator's shoulder, in the robot base frame."""
        return self.robot_shoulder + self.neutral + self.scale * self.axes @ (body_point - shoulder)

    def map_rotation(self, hand_rot: np.ndarray) -> np.ndarray:
        """The hand frame's axes in the robot frame (re-orthonormalised after a mirror)."""
        z, y = self.axes @ hand_rot[:, 2], self.axes @ hand_rot[:, 1]
        return _frame(z, y)

    # -- the loop ---------------------------------------------------------------------------
    def set_engaged(self, engaged: bool) -> None:
        self.deadman.set_engaged(engaged)

    def update(self, kp: Keypoints, q_now: np.ndarray, now: float) -> RetargetResult | None:
        """A command for this frame, or None to hold (not engaged, not tracked, calibrating).
        ``q_now`` is the measured state over the robot's command joints (arm then gripper)."""
        q_now = np.asarray(q_now, dtype=float)
        if q_now.shape != (self.n_cmd,) or not np.all(np.isfinite(q_now)):
            raise ValueError(f"Retargeter.update needs the finite measured state of the {self.n_cmd} command "
                             f"joints {list(self.robot.command_joints)}, got shape {q_now.shape}: {q_now.tolist()}")
        arm = read_arm(kp, self.config.arm, self.config.min_confidence)
        engaged = arm is not None and self.deadman.update(kp)
        if arm is None and self.active:
            # Tracking lost: hold. A short gap (a dropped frame) keeps the anchor, so the hand's
            # orientation reference is not re-taken from one noisy frame; a long one re-anchors.
            self._lost_since = now if self._lost_since is None else self._lost_since
            if now - self._lost_since > self.config.reanchor_gap:
                self.active = False
            return None
        if arm is None or not engaged or not self._calibrated(arm):
            self.active = False  # disengaged (the deadman) always re-anchors on return
            return None
        self._lost_since = None
        closed = self.gripper.update(kp, hand_block(self.config.arm))
        absolute = self.map_point(arm.grip, arm.shoulder)
        hand_rot = self.map_rotation(arm.hand_rot) if (arm.hand_rot is not None and self.config.orientation) else None
        if not self.active:
            self._anchor_at(q_now, absolute, hand_rot, now)
            self.path.reset()
            self.active = True
        offset, align, t0 = self._anchor
        decay = np.exp(-(now - t0) / self.config.anchor_decay) if self.config.anchor_decay > 0 else 1.0
        target = self.within_reach(absolute + decay * offset)
        target_rot = hand_rot @ align if (hand_rot is not None and align is not None) else None
        posture = None
        if self.config.robot_elbow_link:
            posture = PostureTarget(self.config.robot_elbow_link, self.map_point(arm.elbow, arm.shoulder),
                                    self.config.posture_weight)
        seed = self.full(q_now)
        self.path.add(now, target, (target_rot, posture))
        target, (target_rot, posture) = self.path.aim(self._link_pose(q_now, self.robot.ee_link)[:3, 3], now)
        result = self.ik.solve(target, target_rot, seed, posture, self.max_change)
        q = result.q[: self.n_cmd].copy()
        n_arm = len(self.robot.joint_names)
        q[n_arm:] = self.robot.gripper_closed if closed else self.robot.gripper_home
        return RetargetResult(q, target, absolute, target_rot, result.position_error,
                              result.reachable or result.bounded, closed)

    def within_reach(self, target: np.ndarray) -> np.ndarray:
        """The target moved into the reach sphere around the robot's shoulder (toward the target,
        so the nearest reachable point), then into the workspace box: what IK can actually reach,
        so an over-long operator arm, an anchor offset or a hand below the table never drags IK
        astray. Sphere first: clipping to the box first would turn a target beyond reach away
        from the operator's hand (the shoulder is inside the box, so the clip keeps it in reach)."""
        lo, hi = np.asarray(self.config.workspace_min), np.asarray(self.config.workspace_max)
        v = target - self.robot_shoulder
        limit = self.config.reach_margin * self.robot_reach
        dist = float(np.linalg.norm(v))
        if dist > limit:
            target = self.robot_shoulder + v * (limit / dist)
        return np.clip(target, lo, hi)

    def calibrate_from(self, keypoints: list[Keypoints]) -> bool:
        """Calibrate the scale offline from the first tracked frames of a recorded sequence, as
        live retargeting would; then every frame of it maps (``update``), calibration frames
        included. Returns whether it is calibrated (False: the arm is tracked in too few frames)."""
        for kp in keypoints:
            if self.scale is not None:
                break
            arm = read_arm(kp, self.config.arm, self.config.min_confidence)
            if arm is not None:
                self._calibrated(arm)
        return self.scale is not None

    def _calibrated(self, arm: OperatorArm) -> bool:
        if self.scale is not None:
            return True
        self._reaches.append(arm.reach)
        if len(self._reaches) < self.config.calibration_frames:
            return False
        operator = float(np.median(self._reaches))
        self.scale = self.robot_reach / operator
        log.info("calibrated: operator reach %.3f m, robot reach %.3f m, scale %.3f", operator,
                 self.robot_reach, self.scale)
        return True

    def _anchor_at(self, q_now: np.ndarray, absolute: np.ndarray, hand_rot, now: float) -> None:
        """Re-anchor so the first command of a new engagement is where the arm already is."""
        tcp = self._link_pose(np.asarray(q_now, dtype=float), self.robot.ee_link)
        align = hand_rot.T @ tcp[:3, :3] if hand_rot is not None else None
        offset = tcp[:3, 3] - self.within_reach(absolute)
        if np.linalg.norm(offset) < self.config.anchor_min:
            offset = np.zeros(3)
        self._anchor = (offset, align, now)
