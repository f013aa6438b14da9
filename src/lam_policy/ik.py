"""Inverse kinematics: damped least squares with joint limits and null-space posture.

Turns the retargeted TCP target (~30 Hz) into arm joint positions, warm-started from the current
joint state: usually one to three Gauss-Newton steps (~0.15 ms). Each step is task-priority damped
least squares (Siciliano-Slotine), each task solved in the null space of those above it, with
damping fading in near singularities: (1) the TCP pose, position stacked with orientation scaled
by ``orientation_weight`` m/rad; (2) an optional ``PostureTarget`` for the elbow, so a redundant
arm's swivel follows the operator's elbow without moving the TCP (it steps only from a solved
TCP; plain TCP steps then remove its second-order drift); (3) an optional pull toward a rest
configuration. A step that does not reduce the TCP error is retried with Levenberg-Marquardt
damping. Limits shrunk by ``limit_margin`` (the safety filter's margin) hold at every iteration:
a joint whose step would cross a bound is pinned on it and the step re-solved without it. A cold
solve (seed far from the target) stuck in a local minimum restarts from fixed-seed random
configurations; a warm one (tracking) never does, so it never jumps to another IK branch. With
no full solution (out of reach), position is minimised first, orientation second, and the
closest configuration is returned with ``reachable=False``.

Pure numpy, no rclpy. Forward kinematics runs on per-link chains precomputed from the URDF with
the joint rotations batched (~25 us for a 7-joint pose and Jacobian, vs ~80 us via RobotModel).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from lam_control.kinematics import RobotModel, axis_angle_matrix

log = logging.getLogger(__name__)

SETTLED_STEP = 1e-3  # rad: a posture step smaller than this ends the solve
STALL_STEP = 1e-7  # rad: a step this small means no further progress
STALL_RATIO = 1e-4  # two steps in a row improving the error by less than this fraction: a stall
LM_ATTEMPTS = 6  # damping increases tried before calling a configuration a local minimum
LM_START, LM_GROWTH = 0.01, 4.0  # Levenberg-Marquardt damping after a rejected step, and its factor
POSTURE_DAMPING = 0.05  # m: a posture the null space can barely serve must not swing the arm
RANK_TOL = 1e-9  # singular values below this are zero: the direction is left to lower tasks
RESTART_SEED = 7  # fixed, so that solves are deterministic
PRISMATIC_MARGIN = 1e-3  # m, as the safety filter's default


@dataclass
class IKConfig:
    """Solver settings. Units: m, rad; ``orientation_weight`` is m per rad."""

    max_iterations: int = 30  # per descent (the warm start, each restart)
    position_tolerance: float = 5e-4  # m
    orientation_tolerance: float = 5e-3  # rad
    orientation_weight: float = 0.1  # m/rad: 1 rad of orientation error counts as 0.1 m; 0 = ignore
    damping: float = 0.02  # DLS lambda at a singularity (units of the weighted error)
    singular_threshold: float = 0.01  # damping fades in as the smallest singular value drops below
    limit_margin: float = 0.1  # rad kept clear of each revolute limit, as the safety filter's default
    max_step: float = 0.3  # rad: largest change of any joint in one iteration
    null_space_gain: float = 0.5  # fraction of the posture error corrected per posture step
    rest_gain: float = 0.05  # fraction of the way to the rest configuration pulled per iteration
    restarts: int = 8  # random re-seeds when a cold solve's first descent fails (0 = none)
    cold_error: float = 0.05  # m, TCP position error at the seed above which a solve is cold and
    # may restart; warm solves (tracking) never restart, so never jump to another IK branch

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"IKConfig.{name} must not be None")
        for name, low in (("max_iterations", 1), ("restarts", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer() or value < low:
                raise ValueError(f"IKConfig.{name} must be an integer >= {low}, got {value!r}")
            setattr(self, name, int(value))
        checks = ((("position_tolerance", "orientation_tolerance", "singular_threshold", "max_step"),
                   "> 0", lambda v: v > 0),
                  (("orientation_weight", "damping", "limit_margin", "cold_error"), ">= 0", lambda v: v >= 0),
                  (("null_space_gain", "rest_gain"), "in [0, 1]", lambda v: 0 <= v <= 1))
        for names, text, ok in checks:
            for name in names:
                value = getattr(self, name)
                if not (math.isfinite(value) and ok(value)):
                    raise ValueError(f"IKConfig.{name} must be finite and {text}, got {value!r}")


@dataclass
class PostureTarget:
    """A desired position (3,) in m, root frame, for a link other than the TCP (the elbow).

    Served only in the TCP task's null space; ``weight`` in [0, 1] scales ``null_space_gain``.
    """

    link: str
    position: np.ndarray  # (3,)
    weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("link", "position", "weight"):
            if getattr(self, name) is None:
                raise ValueError(f"PostureTarget.{name} must not be None")
        self.position = np.asarray(self.position, dtype=float)
        if self.position.shape != (3,) or not np.all(np.isfinite(self.position)):
            raise ValueError(f"PostureTarget.position must be a finite (3,) vector, got {self.position!r}")
        if not (math.isfinite(self.weight) and 0 <= self.weight <= 1):
            raise ValueError(f"PostureTarget.weight must be in [0, 1], got {self.weight!r}")


@dataclass
class IKResult:
    """One solve. ``q`` is over all the model's joints; the non-arm joints are the seed's."""

    q: np.ndarray  # (n,)
    position_error: float  # m, TCP to target
    orientation_error: float  # rad; 0 when the orientation was not solved for
    iterations: int  # over the warm start and any restarts
    converged: bool  # both tolerances met
    reachable: bool  # the position tolerance met
    bounded: bool = False  # a joint ended on the trust region (``max_change``): later frames go on


class _Chain:
    """Root -> link kinematics over the arm joints, every other joint frozen at the seed.

    ``T(q) = F0 · M1(q1) · F1 · … · Mk(qk) · Fk``: M are arm-joint motions, F the fixed transforms
    (URDF origins and frozen joints) between them.
    """

    def __init__(self, model: RobotModel, link: str, arm_slot: dict[str, int], seed: np.ndarray):
        parent_joint = {j.child: j for j in model.joints.values()}
        path, node = [], link
        while node in parent_joint:
            path.append(parent_joint[node])
            node = parent_joint[node].parent
        fixed, current, slots, axes, prismatic = [], np.eye(4), [], [], []
        for spec in reversed(path):
            current = current @ spec.origin
            if spec.name in arm_slot:
                fixed.append(current)
                current = np.eye(4)
                slots.append(arm_slot[spec.name])
                axes.append(spec.axis)
                prismatic.append(spec.type == "prismatic")
            elif spec.movable:  # frozen at the seed's value
                motion, value = np.eye(4), seed[model.joint_names.index(spec.name)]
                if spec.type == "prismatic":
                    motion[:3, 3] = spec.axis * value
                else:
                    motion[:3, :3] = axis_angle_matrix(spec.axis, value)
                current = current @ motion
        fixed.append(current)
        self.fixed0, self.fixed = fixed[0], np.array(fixed[1:]).reshape(-1, 4, 4)  # (4, 4), (k, 4, 4)
        self.slots = np.array(slots, dtype=int)  # (k,) columns in arm-joint order
        self.axes = np.array(axes).reshape(-1, 3)  # (k, 3) in each joint's frame
        self.prismatic = np.array(prismatic, dtype=bool)  # (k,)
        x, y, z = (self.axes * ~self.prismatic[:, None]).T
        skew = np.zeros((len(slots), 4, 4))  # (k, 4, 4): cross-product matrices K of the axes
        skew[:, :3, :3] = np.stack([np.stack([0 * x, -z, y], -1), np.stack([z, 0 * x, -x], -1),
                                    np.stack([-y, x, 0 * x], -1)], -2)
        self.skew_fixed = skew @ self.fixed  # (k, 4, 4): K F, for Rodrigues' formula
        self.skew2_fixed = skew @ self.skew_fixed  # (k, 4, 4): K^2 F
        self.slide = np.zeros((len(slots), 4, 4))  # (k, 4, 4): prismatic axes in column 3
        self.slide[:, :3, 3] = self.axes * self.prismatic[:, None]
        # A bound on the reach from the first joint; its own offset counts unless along its axis.
        steps = [np.linalg.norm(f[:3, 3]) for f in self.fixed]
        self.anchor = self.fixed0[:3, 3]
        if steps and not prismatic[0] and np.linalg.norm(np.cross(self.fixed[0, :3, 3], axes[0])) < 1e-12:
            self.anchor, steps = (self.fixed0 @ self.fixed[0])[:3, 3], steps[1:]
        self.reach = float(sum(steps)) + sum(
            max(abs(model.joints[n].lower), abs(model.joints[n].upper))
            for n, i in arm_slot.items() if i in slots and model.joints[n].type == "prismatic")

    def evaluate(self, q_arm: np.ndarray, angular: bool) -> tuple[np.ndarray, np.ndarray]:
        """Link pose (4, 4) and its geometric Jacobian (6 or 3, len(q_arm)), linear rows first."""
        if not len(self.slots):  # no arm joint moves this link
            return self.fixed0, np.zeros((6 if angular else 3, len(q_arm)))
        theta = q_arm[self.slots][:, None, None]  # (k, 1, 1)
        # (k, 4, 4): M_i F_i, Rodrigues M = I + sin K + (1 - cos) K^2, or a slide along the axis
        local = self.fixed + np.sin(theta) * self.skew_fixed + (1.0 - np.cos(theta)) * self.skew2_fixed
        local += theta * self.slide
        chain, pose = [], self.fixed0
        for step in local:
            chain.append(pose)
            pose = pose @ step
        frames = np.array(chain)  # (k, 4, 4) joint frames before their own motion
        axes = (frames[:, :3, :3] @ self.axes[:, :, None])[:, :, 0]  # (k, 3) in the root frame
        (ax, ay, az), (dx, dy, dz) = axes.T, (pose[:3, 3] - frames[:, :3, 3]).T
        linear = np.stack([ay * dz - az * dy, az * dx - ax * dz, ax * dy - ay * dx])  # (3, k)
        jac = np.zeros((6 if angular else 3, len(q_arm)))
        jac[:3, self.slots] = np.where(self.prismatic, axes.T, linear)
        if angular:
            jac[3:, self.slots] = axes.T * ~self.prismatic
        return pose, jac


@dataclass
class _Goal:
    target_pos: np.ndarray  # (3,)
    target_rot: np.ndarray | None  # (3, 3); None: position only
    posture: PostureTarget | None
    ee: _Chain
    elbow: _Chain | None
    lower: np.ndarray  # (a,) this solve's joint bounds: the margin-shrunk limits, within any trust region
    upper: np.ndarray  # (a,)


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) of ``target @ current.T`` (root frame): the rotation carrying
    ``current`` (3, 3) onto ``target`` (3, 3). Robust near pi."""
    r = target @ current.T
    v = 0.5 * np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])  # sin(a) axis
    sin_a, cos_a = float(np.linalg.norm(v)), 0.5 * (np.trace(r) - 1.0)
    angle = math.atan2(sin_a, cos_a)
    if sin_a > 1e-6:
        return v * (angle / sin_a)
    if cos_a > 0:
        return v  # a ~ 0: sin(a) ~ a
    axis = np.sqrt(np.clip((np.diag(r) + 1.0) * 0.5, 0.0, None))  # a ~ pi: R ~ 2 a a^T - I
    i = int(np.argmax(axis))
    axis = np.where(r[i] + r[:, i] < 0, -axis, axis)  # signs relative to the largest component
    axis[i] = abs(axis[i])
    return axis / np.linalg.norm(axis) * angle


def _prioritized_step(tasks: list, n: int, damping: float, threshold: float, extra: float,
                      rest: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Task-priority damped least squares over n joints.

    ``tasks`` are (jacobian (m, n), error (m,), gain, damping floor), highest priority first;
    each is solved in the null space the previous ones leave, damped by lambda^2 = damping^2
    (1 - (s_min / threshold)^2) when its smallest singular value s_min is below ``threshold``
    (else 0: plain Gauss-Newton), plus ``extra``^2 (Levenberg-Marquardt) and its floor^2.
    ``rest`` (n,) is a joint-space pull into the null space left at the end. Returns the step
    (n,) and its rest part (n,).
    """
    dq = np.zeros(n)
    basis = None  # (n, r) orthonormal basis of the null space left; None: all of R^n
    for jac, err, gain, floor in tasks:
        a = jac if basis is None else jac @ basis  # (m, r)
        if a.shape[1] == 0:
            break
        u, s, vt = np.linalg.svd(a)
        lam2 = extra * extra + floor * floor
        if len(s) and s[-1] < threshold:
            lam2 += damping ** 2 * (1.0 - (s[-1] / threshold) ** 2)
        ok = s > RANK_TOL
        inverse = np.divide(s, s * s + lam2, out=np.zeros_like(s), where=ok)
        resid = err if basis is None else err - jac @ dq
        y = vt[:len(s)].T @ (inverse * (u[:, :len(s)].T @ resid)) * gain
        dq += y if basis is None else basis @ y
        null = vt[int(np.count_nonzero(ok)):].T  # (r, r - rank)
        basis = null if basis is None else basis @ null
    if rest is None:
        return dq, np.zeros(n)
    pull = rest if basis is None else basis @ (basis.T @ rest)
    return dq + pull, pull


class IKSolver:
    """Inverse kinematics over a robot's arm joints (see the module docstring).

    ``arm_joints`` (matched by name in ``model.joint_names``) are the joints it may move; every
    other joint keeps the seed's value. ``rest`` (len(arm_joints),) is an optional configuration
    pulled toward with ``config.rest_gain``.
    """

    def __init__(self, model: RobotModel, arm_joints: list[str], ee_link: str,
                 config: IKConfig | None = None, rest: np.ndarray | None = None):
        self.model, self.ee_link, self.arm_joints = model, ee_link, list(arm_joints)
        self.config = IKConfig() if config is None else config
        unknown = [j for j in self.arm_joints if j not in model.joint_names]
        if unknown or not self.arm_joints:
            raise ValueError(f"IKSolver arm_joints must name movable joints of the model "
                             f"{model.joint_names}; got {self.arm_joints}, unknown {unknown}")
        if ee_link not in model.link_index:
            raise ValueError(f"IKSolver ee_link {ee_link!r} is not a link of the model {model.link_names}")
        self.arm_index = np.array([model.joint_names.index(j) for j in self.arm_joints])  # (a,)
        margin = np.where(model.prismatic[self.arm_index], PRISMATIC_MARGIN, self.config.limit_margin)
        self.lower = model.lower[self.arm_index] + margin  # (a,)
        self.upper = model.upper[self.arm_index] - margin  # (a,)
        if np.any(self.lower > self.upper):
            bad = [j for j, lo, hi in zip(self.arm_joints, self.lower, self.upper) if lo > hi]
            raise ValueError(f"IKConfig.limit_margin={self.config.limit_margin} leaves no range for {bad}")
        self.rest = None if rest is None else np.asarray(rest, dtype=float)
        if self.rest is not None:
            if self.rest.shape != (len(self.arm_joints),) or not np.all(np.isfinite(self.rest)):
                raise ValueError(f"IKSolver rest must be finite, ({len(self.arm_joints)},); got {rest!r}")
            self.rest = np.clip(self.rest, self.lower, self.upper)
        self._slot = {j: i for i, j in enumerate(self.arm_joints)}
        self._frozen: dict[str, list[int]] = {}  # link -> model indices of non-arm joints on its path
        self._chains: dict[tuple, _Chain] = {}
        if not len(self._chain(ee_link, np.zeros(len(model.joint_names))).slots):
            raise ValueError(f"IKSolver: none of arm_joints {self.arm_joints} moves ee_link {ee_link!r}")

    def _chain(self, link: str, seed: np.ndarray) -> _Chain:
        """The chain to ``link``, cached by the seed's values of the frozen joints on its path."""
        if link not in self._frozen:
            parent = {j.child: j for j in self.model.joints.values()}
            path = [link]
            while path[-1] in parent:
                path.append(parent[path[-1]].parent)
            self._frozen[link] = [self.model.joint_names.index(parent[c].name) for c in path[:-1]
                                  if parent[c].movable and parent[c].name not in self._slot]
        key = (link, tuple(seed[self._frozen[link]].tolist()))
        if key not in self._chains:
            if len(self._chains) > 64:
                self._chains.clear()
            self._chains[key] = _Chain(self.model, link, self._slot, seed)
        return self._chains[key]

    def _goal(self, target_pos, target_rot, seed, posture) -> tuple[_Goal, np.ndarray]:
        target_pos, seed = np.asarray(target_pos, dtype=float), np.asarray(seed, dtype=float)
        if target_pos.shape != (3,) or not np.all(np.isfinite(target_pos)):
            raise ValueError(f"IK target_pos must be a finite (3,) vector in m, got {target_pos!r}")
        if target_rot is not None:
            target_rot = np.asarray(target_rot, dtype=float)
            rotation = target_rot.shape == (3, 3) and np.all(np.isfinite(target_rot)) and \
                np.linalg.det(target_rot) > 0 and np.allclose(target_rot @ target_rot.T, np.eye(3), atol=1e-4)
            if not rotation:
                raise ValueError(f"IK target_rot must be a (3, 3) rotation matrix or None, got {target_rot}")
        if seed.shape != (len(self.model.joint_names),) or not np.all(np.isfinite(seed)):
            raise ValueError(f"IK seed must be finite over the model's joints {self.model.joint_names}, "
                             f"got {seed!r}")
        if posture is not None and posture.link not in self.model.link_index:
            raise ValueError(f"PostureTarget.link {posture.link!r} is not a link of the model")
        use_rot = target_rot is not None and self.config.orientation_weight > 0
        return _Goal(target_pos, target_rot if use_rot else None, posture, self._chain(self.ee_link, seed),
                     None if posture is None else self._chain(posture.link, seed), self.lower, self.upper), seed

    def solve(self, target_pos: np.ndarray, target_rot: np.ndarray | None, seed: np.ndarray,
              posture: PostureTarget | None = None, max_change: np.ndarray | float | None = None) -> IKResult:
        """Configuration putting the TCP at ``target_pos`` (3,) with rotation ``target_rot`` (3, 3)
        (None: any), warm-started from ``seed`` (n,) over the model's joints.

        ``max_change`` (rad, scalar or (a,) over the arm joints; None: unbounded) is a trust
        region: no arm joint ends further than this from the seed. A target outside it gives the
        configuration inside that gets the TCP closest (position first), with ``reachable=False``:
        teleoperation bounds each frame's step by what the arm can move in that time, so the joints
        that can still move take over from the saturated ones, and no far IK solution is commanded
        that the safety filter would approach along a different, per-joint-capped path.

        Always finite and within the margin-shrunk limits; deterministic. An unreachable target
        gives the closest configuration found, with ``reachable=False``.
        """
        goal, seed = self._goal(target_pos, target_rot, seed, posture)
        in_reach = np.linalg.norm(goal.target_pos - goal.ee.anchor) <= goal.ee.reach
        position_only = goal.target_rot is None or not in_reach
        q0 = np.clip(seed[self.arm_index], self.lower, self.upper)
        if max_change is not None:
            bound = np.broadcast_to(np.asarray(max_change, dtype=float), q0.shape)
            if not np.all(bound >= 0):  # also rejects NaN
                raise ValueError(f"IK max_change must be >= 0 rad per arm joint or None, got {max_change!r}")
            goal.lower, goal.upper = np.maximum(self.lower, q0 - bound), np.minimum(self.upper, q0 + bound)
        first = self._evaluate(q0, goal)
        cold = first[3] > self.config.cold_error  # tracking an unreachable orientation stays warm
        best = self._descend(q0, goal, position_only, first)
        iterations = best.iterations
        if not best.converged and in_reach and cold and self.config.restarts and max_change is None:
            rng = np.random.default_rng(RESTART_SEED)
            low, high = np.maximum(self.lower, -math.pi), np.minimum(self.upper, math.pi)
            for _ in range(self.config.restarts):
                trial = self._descend(rng.uniform(low, high), goal, position_only)
                iterations += trial.iterations
                if trial.converged:  # only a full solution replaces the warm start's
                    best = trial
                    break
        if not best.converged and not position_only:  # no full solution: position first
            tail = self._descend(best.q, goal, True)
            iterations += tail.iterations
            best = tail if tail.position_error < best.position_error else best
        q = seed.copy()
        q[self.arm_index] = best.q
        bounded = max_change is not None and bool(np.any(
            ((best.q <= goal.lower + 1e-9) & (goal.lower > self.lower))
            | ((best.q >= goal.upper - 1e-9) & (goal.upper < self.upper))))
        return IKResult(q, best.position_error, best.orientation_error, iterations, best.converged,
                        best.reachable, bounded)

    def _evaluate(self, q: np.ndarray, goal: _Goal) -> tuple:
        """(jacobian (6 or 3, a), position error (3,), rotation error (3,), |pos|, |rot|)."""
        pose, jac = goal.ee.evaluate(q, goal.target_rot is not None)
        e_pos = goal.target_pos - pose[:3, 3]
        e_rot = np.zeros(3) if goal.target_rot is None else rotation_error(goal.target_rot, pose[:3, :3])
        return jac, e_pos, e_rot, float(np.linalg.norm(e_pos)), float(np.linalg.norm(e_rot))

    def _descend(self, q: np.ndarray, goal: _Goal, split: bool, cur: tuple | None = None) -> IKResult:
        """Local task-priority Levenberg-Marquardt from q (a,) until converged (and the null-space
        tasks settled), stalled, or out of iterations. ``split``: position first, then orientation."""
        cfg, w = self.config, self.config.orientation_weight
        cur = self._evaluate(q, goal) if cur is None else cur  # (see _evaluate)
        good, slow, extra = None, 0, 0.0
        for it in range(cfg.max_iterations + 1):
            reached = cur[3] <= cfg.position_tolerance
            done = reached and cur[4] <= cfg.orientation_tolerance
            primary = reached if split else done
            if primary and (good is None or not split or cur[4] <= good.orientation_error):
                good = IKResult(q, cur[3], cur[4], it, done, reached)
            if (done and goal.posture is None) or it == cfg.max_iterations:
                break
            tasks = self._tasks(q, cur, split, goal, secondary=primary)
            if primary:  # a null-space step, taken as is: the next steps restore the primary task
                dq, pull = self._clamped_step(q, tasks, 0.0, goal)
                if np.max(np.abs(dq - pull)) < SETTLED_STEP:
                    break
                q = np.clip(q + dq, goal.lower, goal.upper)
                cur = self._evaluate(q, goal)
                continue
            score = cur[3] if split else math.hypot(cur[3], w * cur[4])
            for _ in range(LM_ATTEMPTS):
                dq, _ = self._clamped_step(q, tasks, extra, goal)
                q_new = np.clip(q + dq, goal.lower, goal.upper)
                new = self._evaluate(q_new, goal)
                new_score = new[3] if split else math.hypot(new[3], w * new[4])
                if new_score < score:
                    break
                extra = max(LM_GROWTH * extra, LM_START)  # overshot: damp toward the gradient
            else:
                break  # no step reduces the error: a local minimum
            extra = extra / LM_GROWTH if extra > LM_START else 0.0
            slow = slow + 1 if score - new_score < STALL_RATIO * score else 0
            if slow >= 2 or np.max(np.abs(dq)) < STALL_STEP:
                break
            q, cur = q_new, new
        if good is not None and (not primary or (split and good.orientation_error < cur[4])):
            return good  # null-space steps ran out of iterations: the last (best) primary solution
        return IKResult(q, cur[3], cur[4], it, done, reached)

    def _tasks(self, q: np.ndarray, cur: tuple, split: bool, goal: _Goal, secondary: bool) -> list:
        """Prioritised (jacobian, error, gain, damping floor) tasks: the TCP pose (or its position, then with
        ``secondary`` its orientation), then with ``secondary`` the posture."""
        w, (jac, e_pos, e_rot) = self.config.orientation_weight, cur[:3]
        if goal.target_rot is None or split:
            tasks = [(jac[:3], e_pos, 1.0, 0.0)]
            if goal.target_rot is not None and secondary:
                tasks.append((jac[3:], e_rot, 1.0, 0.0))
        else:
            tasks = [(np.vstack([jac[:3], w * jac[3:]]), np.concatenate([e_pos, w * e_rot]), 1.0, 0.0)]
        gain = self.config.null_space_gain * goal.posture.weight if secondary and goal.posture else 0.0
        if gain > 0:
            pose, pjac = goal.elbow.evaluate(q, False)
            tasks.append((pjac, goal.posture.position - pose[:3, 3], gain, POSTURE_DAMPING))
        return tasks

    def _clamped_step(self, q: np.ndarray, tasks: list, extra: float, goal: _Goal) -> tuple[np.ndarray, np.ndarray]:
        """A step (a,) within the goal's bounds, and its rest-pull part: joints that would cross a
        bound are pinned on it and the tasks re-solved over the others (a clamping loop)."""
        cfg, n, lower, upper = self.config, len(q), goal.lower, goal.upper
        rest = None if self.rest is None or cfg.rest_gain == 0 else cfg.rest_gain * (self.rest - q)
        free, pinned = np.ones(n, dtype=bool), np.zeros(n)
        while True:
            sub = tasks if free.all() else [(j[:, free], e - j[:, ~free] @ pinned[~free], g, f)
                                            for j, e, g, f in tasks]
            step, pull_free = _prioritized_step(sub, int(free.sum()), cfg.damping, cfg.singular_threshold,
                                                extra, None if rest is None else rest[free])
            dq = pinned.copy()
            dq[free] = step
            over = free & ((q + dq < lower) | (q + dq > upper))
            if not over.any():
                break
            pinned[over] = np.clip(q[over] + dq[over], lower[over], upper[over]) - q[over]
            free &= ~over
        pull = np.zeros(n)
        pull[free] = pull_free
        biggest = float(np.max(np.abs(dq)))
        scale = cfg.max_step / biggest if biggest > cfg.max_step else 1.0
        return dq * scale, pull * scale


def bench_ik(robot, n: int = 300) -> dict:
    """Warm-started solve time, ``{"p50_ms", "p95_ms"}``, for ``robot`` (a RobotConfig) tracking a
    10 cm diameter TCP circle at 30 Hz (5 s per turn) around home, holding the home orientation,
    each frame seeded with the previous solution: the teleoperation hot path."""
    model = robot.load_model()
    solver = IKSolver(model, robot.joint_names, robot.ee_link)
    q = np.zeros(len(model.joint_names))
    q[:len(robot.command_joints)] = robot.home_positions()
    home = model.forward(q)[model.link_index[robot.ee_link]]
    samples, failures = [], 0
    for k in range(n):
        angle = 2 * math.pi * k / 150
        t0 = time.perf_counter()
        result = solver.solve(home[:3, 3] + 0.05 * np.array([math.cos(angle) - 1, math.sin(angle), 0]),
                              home[:3, :3], q)
        samples.append(time.perf_counter() - t0)
        failures += not result.converged
        q = result.q
    if failures:
        log.warning("bench_ik: %d of %d warm solves did not converge", failures, n)
    ms = np.asarray(samples) * 1e3
    return {f"p{p}_ms": round(float(np.percentile(ms, p)), 4) for p in (50, 95)}
