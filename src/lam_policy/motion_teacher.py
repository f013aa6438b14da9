"""The offline retargeting teacher: a whole clean keypoint sequence -> smooth, limit-aware joint targets.

Live retargeting (``lam_policy.retarget``) must answer each frame as it arrives: it sees no future,
so the safety filter's caps make the arm lag and cut across the operator's path, and every jitter
goes straight to the joints. Offline, the whole sequence is known, so the teacher can plan:

1. the operator's grip path over the whole sequence, exactly as ``lam_policy.mimic.reference_path``
   computes it (one Retargeter, calibrated on the first frames; targets kept within reach), and
   the operator's elbow as the IK's null-space posture;
2. timing: human arms move at 2-9 m/s in these clips, the arm at most ``max_cartesian_speed``
   (the sim safety filter's 1 m/s). A dynamic programme over points along the operator's path
   picks TCP waypoints along (and straight across) the path, moving at most that fast, that stay
   closest to the path the operator showed in the last ``path_window`` s (what ``lam mimic``
   reports as path deviation): where the arm cannot keep up it follows the path late, cuts
   across it, or waits where the path comes back, instead of chasing each newest point;
3. IK per frame, warm-started from the previous frame's solution (so it stays on one branch),
   each step bounded by the joint velocity cap and scaled to the Cartesian cap;
4. zero-phase smoothing of the joint trajectory (a Gaussian low-pass applied as one symmetric
   kernel: no lag);
5. limit-aware: positions kept inside the safety filter's limits (its margin plus
   ``extra_margin``) and its joint speed and acceleration caps (``velocity_scale`` x URDF
   velocity, reached in ``accel_time``, as control.yaml's filter; ``headroom`` below them)
   enforced by a backward pass, which makes every joint start moving early enough to arrive on
   time (anticipation, not lag), then a forward pass from the start pose (the arm is there at
   t=0, so the plan must be reachable from it). The filter then passes the plan unchanged.

The result is the joint trajectory a learned policy is trained to output (``lam_policy.motion_data``).
Pure numpy (no rclpy, no torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lam_capture.skeleton import Keypoints
from lam_control.robot import RobotConfig
from lam_policy.ik import IKConfig, IKSolver, PostureTarget
from lam_policy.retarget import RetargetConfig, Retargeter, read_arm

GRIPPER_MODES = ("pinch", "hold")


@dataclass
class TeacherConfig:
    """Offline teacher settings. Units: Hz, rad (revolute), m (prismatic), s."""

    cutoff: float = 3.0  # Hz, -3 dB frequency of the zero-phase Gaussian low-pass on the joints
    velocity_scale: float = 0.5  # joint speed cap as a fraction of the URDF limit (control.yaml's)
    accel_time: float = 0.1  # s from rest to the speed cap (control.yaml's): acceleration cap = cap / this
    headroom: float = 0.9  # fraction of the filter's speed and acceleration caps the plan uses
    max_cartesian_speed: float = 1.0  # m/s, every link (control.yaml's sim_max_cartesian_speed)
    # s: the waypoints stay close to the path shown this long ago or later; 0 = aim at every
    # frame's own target. lam mimic's path deviation looks back 0.5 s; 0.1 s is left for latency.
    path_window: float = 0.4
    path_spacing: float = 0.01  # m between the candidate waypoints laid along the path
    plan_step: float = 0.05  # s between the plan's knots (straight lines in between)
    move_cost: float = 0.02  # m of path deviation one metre of TCP travel is worth (stay still when idle)
    # Weight of the distance to the frame's own target: lateness within the window is free for the
    # path deviation, but a plan that can be on time should be (lam mimic's time-aligned error).
    align_weight: float = 0.2
    # m, the safety filter's TCP box (control.yaml) and how far inside it waypoints stay: a TCP
    # that grazes the box is held by the filter until the command leads back inside.
    workspace_min: list[float] = field(default_factory=lambda: [-0.9, -0.9, 0.02])
    workspace_max: list[float] = field(default_factory=lambda: [0.9, 0.9, 1.3])
    workspace_margin: float = 0.04
    position_margin: float = 0.1  # rad kept clear of revolute limits (the safety filter's margin)
    prismatic_margin: float = 0.001  # m kept clear of prismatic limits (the safety filter's margin)
    extra_margin: float = 0.02  # rad further inside, so a learned policy's small errors stay legal
    ik_iterations: int = 60  # per frame (warm-started; offline, so no real-time budget)
    orientation: bool = False  # also follow the hand's orientation (relative to the first frame)
    gripper: str = "pinch"  # pinch (thumb-index distance, as the retargeter) | hold (stay open)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"TeacherConfig.{name} must not be None")
        if not (math.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"TeacherConfig.cutoff must be finite and > 0 Hz, got {self.cutoff!r}")
        if not (math.isfinite(self.velocity_scale) and 0 < self.velocity_scale <= 1):
            raise ValueError(f"TeacherConfig.velocity_scale must be in (0, 1], got {self.velocity_scale!r}")
        if not (math.isfinite(self.headroom) and 0 < self.headroom <= 1):
            raise ValueError(f"TeacherConfig.headroom must be in (0, 1], got {self.headroom!r}")
        for name in ("max_cartesian_speed", "path_spacing", "plan_step", "accel_time"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"TeacherConfig.{name} must be finite and > 0, got {value!r}")
        lo, hi = np.asarray(self.workspace_min, dtype=float), np.asarray(self.workspace_max, dtype=float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo + hi)) or \
                np.any(lo + 2 * self.workspace_margin >= hi):
            raise ValueError(f"TeacherConfig.workspace_min/max must be finite xyz leaving room for the margin, "
                             f"got {self.workspace_min} / {self.workspace_max}")
        for name in ("position_margin", "prismatic_margin", "extra_margin", "path_window", "move_cost",
                     "align_weight", "workspace_margin"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TeacherConfig.{name} must be finite and >= 0, got {value!r}")
        if isinstance(self.ik_iterations, bool) or not isinstance(self.ik_iterations, int) or self.ik_iterations < 1:
            raise ValueError(f"TeacherConfig.ik_iterations must be an integer >= 1, got {self.ik_iterations!r}")
        if self.gripper not in GRIPPER_MODES:
            raise ValueError(f"TeacherConfig.gripper must be one of {GRIPPER_MODES}, got {self.gripper!r}")


@dataclass
class OperatorPath:
    """The operator's motion mapped to the robot, per frame: grip targets (F, 3) and elbow
    postures (F, 3) in the robot base frame (m; NaN where not tracked), hand
    rotations (F, 3, 3) (NaN where unseen), gripper closed (F,) and the frame times (F,) in s."""

    times: np.ndarray
    targets: np.ndarray
    elbows: np.ndarray
    rotations: np.ndarray
    closed: np.ndarray


def operator_path(robot: RobotConfig, retarget: RetargetConfig, keypoints: list[Keypoints]) -> OperatorPath:
    """Map every frame as ``mimic.reference_path`` does (the targets are identical to its)."""
    if not keypoints:
        raise ValueError("operator_path: no keypoint frames")
    rt = Retargeter(robot, retarget)
    rt.calibrate_from(keypoints)
    q = robot.home_positions()
    n = len(keypoints)
    targets, elbows = np.full((n, 3), np.nan), np.full((n, 3), np.nan)
    rotations, closed = np.full((n, 3, 3), np.nan), np.zeros(n, dtype=bool)
    for i, kp in enumerate(keypoints):
        result = rt.update(kp, q, kp.stamp)
        if result is None:
            closed[i] = closed[i - 1] if i else False
            continue
        targets[i] = rt.within_reach(result.absolute_target)
        closed[i] = result.gripper_closed
        arm = read_arm(kp, retarget.arm, retarget.min_confidence)
        elbows[i] = rt.map_point(arm.elbow, arm.shoulder)
        if arm.hand_rot is not None:
            rot = rt.map_rotation(arm.hand_rot)
            if rot is not None:
                rotations[i] = rot
    if not np.isfinite(targets[:, 0]).any():
        raise ValueError("the keypoints never show the driving arm: nothing to imitate")
    times = np.array([kp.stamp for kp in keypoints], dtype=float)
    if np.any(np.diff(times) <= 0):
        raise ValueError("operator_path: keypoint stamps must increase")
    return OperatorPath(times, targets, elbows, rotations, closed)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """(F, ...) with NaN rows -> each NaN row the last finite row before it (the first finite row
    before any): offline, the arm holds where tracking was lost and starts where it begins."""
    flat = values.reshape(len(values), -1)
    ok = np.all(np.isfinite(flat), axis=1)
    if not ok.any():
        raise ValueError("fill_gaps: no finite row")
    idx = np.where(ok, np.arange(len(flat)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = np.flatnonzero(ok)[0]
    return values[idx]


def path_candidates(points: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Waypoint candidates along the polyline ``points`` (F, 3): every segment subdivided to at
    most ``spacing`` m, near-duplicates (a looped clip retraces itself) merged. Returns the
    candidates (S, 3) and, for each, the frame (S,) whose segment it lies on."""
    cand, src = [points[:1]], [np.zeros(1, dtype=int)]
    for i in range(len(points) - 1):
        n = max(1, int(math.ceil(np.linalg.norm(points[i + 1] - points[i]) / spacing)))
        f = np.arange(1, n + 1)[:, None] / n  # (n, 1)
        cand.append(points[i] + f * (points[i + 1] - points[i]))
        src.append(np.where(f[:, 0] < 0.5, i, i + 1))
    cand, src = np.concatenate(cand), np.concatenate(src)
    _, keep = np.unique(np.round(cand / (0.7 * spacing)).astype(np.int64), axis=0, return_index=True)
    keep = np.sort(keep)
    return cand[keep], src[keep]


def window_cost(cand: np.ndarray, points: np.ndarray, times: np.ndarray, window: float,
                align_weight: float = 0.0) -> np.ndarray:
    """(F, S): distance (m) from each candidate to the nearest target shown in [t - window, t],
    plus ``align_weight`` x its distance to the frame's own target."""
    dist = np.linalg.norm(cand[None] - points[:, None], axis=2)  # (F, S)
    cost = np.empty_like(dist)
    for t in range(len(points)):
        first = int(np.searchsorted(times, times[t] - window, side="left"))
        cost[t] = dist[first:t + 1].min(axis=0)
    return cost + align_weight * dist


def plan_waypoints(points: np.ndarray, times: np.ndarray, config: TeacherConfig) -> tuple[np.ndarray, np.ndarray]:
    """TCP waypoints (F, 3) for targets ``points`` (F, 3) at ``times`` (F,) s, and the frame (F,)
    each waypoint lies at (for its elbow posture); see the module docstring, step 2.

    Knots every ``plan_step`` s each sit on one candidate; between knots the waypoint moves in a
    straight line (so it may cut across the path), at most ``max_cartesian_speed``. The route
    minimises the frames' window cost (``window_cost``; a frame counts at its nearest knot) plus
    ``move_cost`` x distance moved, from the candidate nearest the first target (where the arm
    starts). ``path_window`` 0: the targets themselves."""
    if config.path_window <= 0:
        return points.copy(), np.arange(len(points))
    cand, src = path_candidates(points, config.path_spacing)
    step = config.plan_step
    knots = np.arange(times[0], times[-1] + step, step)  # (K,)
    knot_of = np.clip(np.round((times - times[0]) / step).astype(int), 0, len(knots) - 1)  # (F,)
    cost = np.zeros((len(knots), len(cand)))
    np.add.at(cost, knot_of, window_cost(cand, points, times, config.path_window, config.align_weight))
    start = int(np.argmin(np.linalg.norm(cand - points[0], axis=1)))
    route = shortest_route(cost, cand, config.max_cartesian_speed * step,
                           config.move_cost * len(times) / len(knots), start)
    knot_points = cand[route]  # (K, 3)
    waypoints = np.stack([np.interp(times, knots, knot_points[:, a]) for a in range(3)], axis=1)
    return waypoints, src[route][knot_of]


def shortest_route(cost: np.ndarray, cand: np.ndarray, reach: float, move_cost: float, start: int) -> np.ndarray:
    """Dynamic programme: the candidate index (K,) of every knot minimising the sum of ``cost``
    (K, S) plus ``move_cost`` x metres moved, from ``start``, moving at most ``reach`` m per knot."""
    pair = np.linalg.norm(cand[:, None] - cand[None], axis=2)  # (S, S)
    near = [np.flatnonzero(row <= reach) for row in pair]  # never empty: a candidate is near itself
    width = max(len(n) for n in near)
    nbr = np.array([np.r_[n, np.full(width - len(n), n[0])] for n in near])  # (S, m)
    rows = np.arange(len(cand))
    moves = move_cost * pair[rows[:, None], nbr]  # (S, m)
    value = np.full(len(cand), np.inf)
    value[start] = cost[0, start]
    back = np.zeros(cost.shape, dtype=np.int64)
    for k in range(1, len(cost)):
        total = value[nbr] + moves  # (S, m): arriving at each candidate from each neighbour
        best = np.argmin(total, axis=1)
        back[k] = nbr[rows, best]
        value = total[rows, best] + cost[k]
    route = np.empty(len(cost), dtype=np.int64)
    route[-1] = int(np.argmin(value))
    for k in range(len(cost) - 1, 0, -1):
        route[k - 1] = back[k, route[k]]
    return route


def solve_sequence(robot: RobotConfig, retarget: RetargetConfig, path: OperatorPath, config: TeacherConfig,
                   waypoints: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Arm joint positions (F, n_arm) following ``waypoints`` (F, 3): the first by a cold IK solve
    from home (as reference_path's start pose), then each warm-started from the previous frame,
    bounded by the joint velocity cap and scaled so no link origin outruns the Cartesian cap.
    The elbow posture of frame i is the operator's elbow at frame ``sources[i]``."""
    model = robot.load_model()
    margin = config.position_margin + config.extra_margin
    ik = IKSolver(model, robot.joint_names, robot.ee_link, IKConfig(
        max_iterations=config.ik_iterations, restarts=0, limit_margin=margin,
        orientation_weight=retarget.ik.orientation_weight))
    cold = IKSolver(model, robot.joint_names, robot.ee_link,
                    IKConfig(max_iterations=config.ik_iterations, limit_margin=margin))
    n_arm = len(robot.joint_names)
    pad = np.zeros(len(model.joint_names) - n_arm)
    vmax = joint_bounds(robot, config)[2][:n_arm]
    elbows = fill_gaps(path.elbows)
    seed = cold.solve(waypoints[0], None, np.concatenate([robot.home_positions()[:n_arm], pad]), None).q
    align = _orientation_align(model, robot, seed, path.rotations) if config.orientation else None
    q = np.empty((len(waypoints), n_arm))
    q[0] = seed[:n_arm]
    for i in range(1, len(waypoints)):
        dt = path.times[i] - path.times[i - 1]
        posture = PostureTarget(retarget.robot_elbow_link, elbows[sources[i]], retarget.posture_weight) \
            if retarget.robot_elbow_link else None
        rot = path.rotations[sources[i]] @ align if align is not None else None
        if rot is not None and not np.all(np.isfinite(rot)):
            rot = None
        step = ik.solve(waypoints[i], rot, seed, posture, vmax * dt).q - seed
        moved = np.linalg.norm(model.link_positions(seed + step) - model.link_positions(seed), axis=1).max()
        seed = seed + step * min(1.0, config.max_cartesian_speed * dt / max(moved, 1e-12))
        q[i] = seed[:n_arm]
    return q


def _orientation_align(model, robot: RobotConfig, seed: np.ndarray, rotations: np.ndarray) -> np.ndarray | None:
    """hand_rot0^T @ tcp_rot0: drives the TCP relative to the orientation both had at the first
    seen hand frame (as the retargeter anchors it); None when the hand is never seen."""
    seen = np.flatnonzero(np.all(np.isfinite(rotations.reshape(len(rotations), -1)), axis=1))
    if not len(seen):
        return None
    tcp = model.forward(seed)[model.link_index[robot.ee_link]][:3, :3]
    return rotations[seen[0]].T @ tcp


def gaussian_smooth(q: np.ndarray, times: np.ndarray, cutoff: float) -> np.ndarray:
    """Zero-phase Gaussian low-pass of (F, J) samples at uniform-ish ``times`` (s) with its -3 dB
    point at ``cutoff`` Hz; the ends are padded with their first/last sample (the arm holds)."""
    if len(q) < 2:
        return q.copy()
    dt = float(np.median(np.diff(times)))
    sigma = math.sqrt(math.log(2.0)) / (2.0 * math.pi * cutoff) / dt  # in samples
    half = max(1, int(math.ceil(3.0 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(q[:1], half, axis=0), q, np.repeat(q[-1:], half, axis=0)])
    return np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(q.shape[1])], axis=1)


def _braking_speed(dist: np.ndarray, amax: np.ndarray, dt: float) -> np.ndarray:
    """Fastest speed from which deceleration ``amax``, applied per step of ``dt``, stops within ``dist``."""
    return amax * (-dt / 2 + np.sqrt(dt * dt / 4 + 2 * np.maximum(dist, 0.0) / amax))


def track(ref: np.ndarray, times: np.ndarray, vmax: np.ndarray, amax: np.ndarray,
          lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """(F, J) positions following ``ref`` (F, J) from ref[0] as the safety filter moves a joint:
    speed at most ``vmax``, speed change at most ``amax`` x dt per step, braking to stop at the
    reference (``SafetyFilter._limit_joint_motion``'s rule) and before ``lower``/``upper``."""
    out = np.empty_like(ref, dtype=float)
    q, v = np.clip(np.array(ref[0], dtype=float), lower, upper), np.zeros(ref.shape[1])
    out[0] = q
    for i in range(1, len(ref)):
        dt = times[i] - times[i - 1]
        err = ref[i] - q
        v_want = np.sign(err) * np.minimum(np.abs(err) / dt, np.minimum(_braking_speed(np.abs(err), amax, dt), vmax))
        v_want = np.clip(v_want, -_braking_speed(q - lower, amax, dt), _braking_speed(upper - q, amax, dt))
        v = np.clip(np.clip(v_want, v - amax * dt, v + amax * dt), -vmax, vmax)
        q = np.clip(q + v * dt, lower, upper)  # a stop the caps cannot brake for in time stops at the limit
        out[i] = q
    return out


def limit_motion(q: np.ndarray, times: np.ndarray, vmax: np.ndarray, amax: np.ndarray,
                 lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """(F, J) positions -> a trajectory the safety filter passes unchanged: within
    [``lower``, ``upper``], speed <= ``vmax``, acceleration <= ``amax`` (per joint), from q[0].

    Backward pass: ``track`` run on the time-reversed trajectory, so where a joint cannot follow
    a fast move it starts early (it anticipates) instead of lagging. Forward pass: ``track`` from
    the first frame (where the arm is) over that, which keeps both caps forward in time.
    """
    reverse = times[-1] - times[::-1]
    early = track(q[::-1], reverse, vmax, amax, lower, upper)[::-1]
    early[0] = q[0]
    return track(early, times, vmax, amax, lower, upper)


def joint_bounds(robot: RobotConfig, config: TeacherConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper, vmax) over the command joints: URDF limits less the safety margins and
    ``extra_margin`` (revolute only), and the velocity cap times ``headroom``."""
    model = robot.load_model()
    n = len(robot.command_joints)
    prismatic = model.prismatic[:n]
    margin = np.where(prismatic, config.prismatic_margin, config.position_margin + config.extra_margin)
    lower, upper = model.lower[:n] + margin, model.upper[:n] - margin
    return lower, upper, model.velocity[:n] * config.velocity_scale * config.headroom


def teacher_trajectory(robot: RobotConfig, keypoints: list[Keypoints], retarget: RetargetConfig | None = None,
                       config: TeacherConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's joint targets for a clean keypoint sequence (stamps in s, increasing):
    (times (F,) s, q (F, n_cmd)) over ``robot.command_joints`` (arm, then gripper fingers)."""
    retarget = retarget or RetargetConfig()
    config = config or TeacherConfig()
    path = operator_path(robot, retarget, keypoints)
    margin = config.workspace_margin
    inside = np.clip(fill_gaps(path.targets), np.asarray(config.workspace_min) + margin,
                     np.asarray(config.workspace_max) - margin)
    waypoints, sources = plan_waypoints(inside, path.times, config)
    q_arm = solve_sequence(robot, retarget, path, config, waypoints, sources)
    n_arm = len(robot.joint_names)
    lower, upper, vmax = joint_bounds(robot, config)
    q_arm = gaussian_smooth(q_arm, path.times, config.cutoff)
    q_arm = limit_motion(q_arm, path.times, vmax[:n_arm], vmax[:n_arm] / config.accel_time, lower[:n_arm],
                         upper[:n_arm])
    n_grip = len(robot.gripper_joints)
    if not n_grip:
        return path.times, q_arm
    closed = path.closed if config.gripper == "pinch" else np.zeros(len(path.times), dtype=bool)
    grip = np.where(closed, robot.gripper_closed, robot.gripper_home)[:, None].repeat(n_grip, axis=1)
    grip = limit_motion(grip, path.times, vmax[n_arm:], vmax[n_arm:] / config.accel_time, lower[n_arm:],
                        upper[n_arm:])
    return path.times, np.concatenate([q_arm, grip], axis=1)
