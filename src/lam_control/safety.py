"""The safety filter: the last gate every joint command passes before it reaches an arm.

Pure and backend-agnostic (PyBullet or a physical arm). Each control tick takes the desired
joint positions and returns the positions actually commanded, guaranteeing:

- finite values only: a non-finite request latches a fault and the arm holds (no nan_to_num);
- positions within [lower + margin, upper - margin];
- per-tick change within the velocity cap, and velocity change within the acceleration cap;
- every link origin and the TCP moving no faster than ``max_cartesian_speed``;
- the TCP inside the workspace box;
- a hold when the command stream goes stale (watchdog), on e-stop, and after any fault, until an
  explicit reset followed by a fresh command.

A hold keeps the last commanded position (a controlled stop at the current setpoint).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from lam_control.kinematics import RobotModel

log = logging.getLogger(__name__)

BOX_TOLERANCE = 1e-9  # m; the box test itself, not a slack on the guarantee
SLIDE_INSET = 1e-3  # m inside the box face a sliding TCP aims for


@dataclass
class SafetyConfig:
    """Safety limits. Units: rad (revolute), m (prismatic, Cartesian), s."""

    position_margin: float = 0.1  # rad kept clear of each revolute joint's URDF limits
    prismatic_margin: float = 0.001  # m kept clear of each prismatic joint's limits
    velocity_scale: float = 0.5  # velocity cap as a fraction of the URDF velocity limit
    accel_time: float = 0.1  # s from rest to the velocity cap: acceleration cap = cap / accel_time
    max_cartesian_speed: float = 0.25  # m/s for every link and the TCP (physical-arm default)
    workspace_min: list[float] = field(default_factory=lambda: [-0.9, -0.9, 0.02])  # m
    workspace_max: list[float] = field(default_factory=lambda: [0.9, 0.9, 1.3])  # m
    command_timeout: float = 0.1  # s without a new valid command before holding; 0 = off
    control_period: float = 0.01  # s between filter ticks

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"SafetyConfig.{name} must not be None")
        self.workspace_min = [float(v) for v in self.workspace_min]
        self.workspace_max = [float(v) for v in self.workspace_max]
        positive = ("velocity_scale", "accel_time", "max_cartesian_speed", "control_period")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SafetyConfig.{name} must be finite and > 0, got {value!r}")
        for name in ("position_margin", "prismatic_margin", "command_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SafetyConfig.{name} must be finite and >= 0, got {value!r}")
        if self.velocity_scale > 1.0:
            raise ValueError(f"SafetyConfig.velocity_scale must be <= 1 (a fraction of the URDF "
                             f"limit), got {self.velocity_scale}")
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo + hi)) or np.any(lo >= hi):
            raise ValueError(f"SafetyConfig.workspace_min/max must be finite xyz with min < max, "
                             f"got {self.workspace_min} / {self.workspace_max}")


@dataclass
class SafetyStatus:
    """What one tick did. ``command`` is what the arm is sent."""

    command: np.ndarray  # (J,)
    holding: bool
    reason: str  # '' when tracking; else 'estop', 'fault', 'watchdog', 'idle'
    interventions: tuple[str, ...] = ()


class SafetyFilter:
    """Stateful filter over one robot's command joints (see module docstring).

    ``model`` must order its configuration with the command joints first (as
    RobotConfig.load_model does); further movable joints are held at zero.
    """

    def __init__(self, model: RobotModel, n_command: int, config: SafetyConfig,
                 initial: np.ndarray, ee_link: str):
        self.model, self.config, self.n = model, config, n_command
        margin = np.where(model.prismatic[:n_command], config.prismatic_margin, config.position_margin)
        self.lower = model.lower[:n_command] + margin
        self.upper = model.upper[:n_command] - margin
        if np.any(self.lower > self.upper):
            bad = [model.joint_names[i] for i in np.flatnonzero(self.lower > self.upper)]
            raise ValueError(f"safety margins leave no range for joints {bad}")
        self.vcap = model.velocity[:n_command] * config.velocity_scale
        self.acap = self.vcap / config.accel_time
        self.dt = config.control_period
        self.box_lo = np.asarray(config.workspace_min)
        self.box_hi = np.asarray(config.workspace_max)
        self.ee_index = model.link_index[ee_link]
        self.ee_link = ee_link
        self._pad = np.zeros(len(model.joint_names) - n_command)
        self._fk_key: bytes | None = None
        self._fk_links: np.ndarray | None = None
        initial = np.asarray(initial, dtype=float)
        if initial.shape != (n_command,) or not np.all(np.isfinite(initial)):
            raise ValueError(f"initial position must be {n_command} finite values, got {initial}")
        self.q = initial.copy()  # last commanded position
        self.v = np.zeros(n_command)  # last commanded velocity
        self._links = self._positions(self.q)
        self.fault: str = ""
        self.estopped = False
        self.last_command_time: float | None = None

    # -- events -----------------------------------------------------------------------------
    def accept_command(self, targets: np.ndarray, now: float) -> bool:
        """Check a new command's points (N, J). Non-finite latches a fault; valid feeds the watchdog."""
        targets = np.asarray(targets, dtype=float)
        if targets.ndim != 2 or targets.shape[1] != self.n or not np.all(np.isfinite(targets)):
            self.latch_fault(f"non-finite or malformed command of shape {targets.shape}")
            return False
        if self.estopped or self.fault:
            return False
        self.last_command_time = now
        return True

    def latch_fault(self, why: str) -> None:
        if not self.fault:
            log.error("safety fault latched: %s", why)
        self.fault = self.fault or why

    def estop(self) -> None:
        if not self.estopped:
            log.warning("e-stop latched")
        self.estopped = True

    def reset(self) -> None:
        """Clear e-stop and fault. The arm stays held until a new command arrives."""
        self.estopped, self.fault = False, ""
        self.last_command_time = None
        self.v[:] = 0.0

    def resync(self, measured: np.ndarray) -> None:
        """Restart from a measured position (e.g. after a physical arm was moved while held)."""
        measured = np.asarray(measured, dtype=float)
        if measured.shape == (self.n,) and np.all(np.isfinite(measured)):
            self.q, self.v = measured.copy(), np.zeros(self.n)
            self._links = self._positions(self.q)

    # -- the tick ---------------------------------------------------------------------------
    def hold_reason(self, now: float) -> str:
        if self.estopped:
            return "estop"
        if self.fault:
            return "fault"
        if self.last_command_time is None:
            return "idle"
        timeout = self.config.command_timeout
        if timeout > 0 and now - self.last_command_time > timeout:
            return "watchdog"
        return ""

    def step(self, target: np.ndarray | None, now: float) -> SafetyStatus:
        """Filter one tick's desired position (J,) into the command to send."""
        reason = self.hold_reason(now)
        if not reason and target is None:
            reason = "idle"
        if not reason:
            target = np.asarray(target, dtype=float)
            if target.shape != (self.n,) or not np.all(np.isfinite(target)):
                self.latch_fault(f"non-finite or malformed target {target}")
                reason = "fault"
        if reason:
            self.v[:] = 0.0
            return SafetyStatus(self.q.copy(), True, reason)
        notes: list[str] = []
        goal = self._clamp_limits(target, notes)
        goal = self._clamp_workspace(goal, notes)
        q_next = self._limit_joint_motion(goal, notes)
        q_next = self._limit_cartesian(q_next, notes)
        q_next = self._keep_in_box(q_next, notes)
        self.v = (q_next - self.q) / self.dt
        self.q = q_next
        self._links = self._positions(q_next)
        return SafetyStatus(q_next.copy(), False, "", tuple(notes))

    # -- the rules --------------------------------------------------------------------------
    def _full(self, q: np.ndarray) -> np.ndarray:
        return np.concatenate([q, self._pad])

    def _positions(self, q: np.ndarray) -> np.ndarray:
        """Link origins (L, 3) for q, memoised for the last q: in a tick without interventions
        the cap, the box check and the next tick's reference all ask for the same command."""
        key = np.asarray(q, dtype=float).tobytes()
        if key != self._fk_key:
            links = self.model.link_positions(self._full(q))
            links.flags.writeable = False
            self._fk_key, self._fk_links = key, links
        return self._fk_links

    def _in_box(self, point: np.ndarray) -> bool:
        return bool(np.all(point >= self.box_lo - BOX_TOLERANCE) and np.all(point <= self.box_hi + BOX_TOLERANCE))

    def _clamp_limits(self, target: np.ndarray, notes: list[str]) -> np.ndarray:
        clamped = np.clip(target, self.lower, self.upper)
        if np.any(clamped != target):
            notes.append("position_clamp")
        return clamped

    def _clamp_workspace(self, goal: np.ndarray, notes: list[str]) -> np.ndarray:
        """Move a goal whose TCP lies outside the box to one whose TCP is on the box (few DLS steps)."""
        tcp = self._positions(goal)[self.ee_index]
        if self._in_box(tcp):
            return goal
        notes.append("workspace_clamp")
        aim = np.clip(tcp, self.box_lo, self.box_hi)
        q = goal.copy()
        for _ in range(10):
            frames = self.model.forward(self._full(q))
            err = aim - frames[self.ee_index, :3, 3]
            if np.linalg.norm(err) < 1e-4:
                break
            jac = self.model.jacobian(self._full(q), self.ee_link, frames)[:3, : self.n]
            step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), err)
            q = np.clip(q + step, self.lower, self.upper)
        return q  # any residual is caught by _keep_in_box on the emitted command

    def _limit_joint_motion(self, goal: np.ndarray, notes: list[str]) -> np.ndarray:
        """Velocity cap, acceleration cap and a braking profile that stops at the goal."""
        dt, a = self.dt, self.acap
        err = goal - self.q
        dist = np.abs(err)
        # Fastest speed from which constant deceleration a, applied per tick, stops within dist.
        v_brake = a * (-dt / 2 + np.sqrt(dt * dt / 4 + 2 * dist / a))
        v_want = np.sign(err) * np.minimum(dist / dt, np.minimum(v_brake, self.vcap))
        v_new = np.clip(v_want, self.v - a * dt, self.v + a * dt)
        v_new = np.clip(v_new, -self.vcap, self.vcap)
        if np.any(dist / dt > self.vcap):
            notes.append("velocity_cap")
        if np.any(v_new != np.clip(v_want, -self.vcap, self.vcap)):
            notes.append("accel_cap")
        # A start outside the margins (a physical arm parked there) may stay, never go further.
        return np.clip(self.q + v_new * dt, np.minimum(self.lower, self.q), np.maximum(self.upper, self.q))

    def _moved(self, q: np.ndarray) -> float:
        """Largest link-origin displacement (m) from the last command to q."""
        return float(np.linalg.norm(self._positions(q) - self._links, axis=1).max())

    def _limit_cartesian(self, q_next: np.ndarray, notes: list[str]) -> np.ndarray:
        """Slow the step until no link origin (TCP included) moves faster than the cap.

        Scaling the whole step towards zero would cut every joint's velocity at once, past what
        the acceleration cap allows. So the step is blended towards the hardest braking that cap
        allows (each joint's velocity a * dt closer to zero), which keeps both caps; only when
        even that braking moves a link too far does it shrink towards standing still.
        """
        max_step = self.config.max_cartesian_speed * self.dt
        m_hi = self._moved(q_next)
        if m_hi <= max_step:
            return q_next
        notes.append("cartesian_cap")
        v_brake = np.clip(0.0, self.v - self.acap * self.dt, self.v + self.acap * self.dt)
        brake = np.clip(self.q + v_brake * self.dt, np.minimum(self.lower, self.q),
                        np.maximum(self.upper, self.q))
        m_lo = self._moved(brake)
        if m_lo <= max_step:
            lo, hi = 0.0, 1.0  # blend fractions: lo within the cap, hi over it
            for _ in range(8):
                if m_lo >= 0.95 * max_step:
                    break
                # Secant aim a little under the cap; the displacement is near-convex in the blend.
                mid = lo + (hi - lo) * (0.95 * max_step - m_lo) / (m_hi - m_lo)
                moved = self._moved(brake + mid * (q_next - brake))
                if moved > max_step:
                    hi, m_hi = mid, moved
                else:
                    lo, m_lo = mid, moved
                    break
            return brake + lo * (q_next - brake)
        step = q_next - self.q  # braking alone is too fast: an emergency slow-down
        scale = 1.0
        for _ in range(8):
            moved = self._moved(self.q + scale * step)
            if moved <= max_step:
                return self.q + scale * step
            scale *= 0.95 * max_step / moved
        return self.q.copy()

    def _keep_in_box(self, q_next: np.ndarray, notes: list[str]) -> np.ndarray:
        """Last line: the emitted TCP stays in the box (or, if already outside, gets no further out)."""
        tcp = self._positions(q_next)[self.ee_index]
        if self._in_box(tcp):
            return q_next
        here = self._links[self.ee_index]
        outside = _box_excess(tcp, self.box_lo, self.box_hi)
        if not self._in_box(here) and outside <= _box_excess(here, self.box_lo, self.box_hi):
            return q_next  # recovering towards the box from outside it
        notes.append("workspace_stop")
        lo, hi, step = 0.0, 1.0, q_next - self.q
        for _ in range(12):  # largest fraction of the step that keeps the TCP acceptable
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self._box_ok(self.q + mid * step, here) else (lo, mid)
        slide = self._slide(q_next, tcp, here)  # within the acceleration cap, unlike a cut-short step
        if slide is not None:
            notes.append("workspace_slide")
            return slide
        return self.q + lo * step

    def _box_ok(self, q: np.ndarray, here: np.ndarray) -> bool:
        """q's TCP is in the box, or no further out than ``here``."""
        p = self._positions(q)[self.ee_index]
        return self._in_box(p) or _box_excess(p, self.box_lo, self.box_hi) <= _box_excess(
            here, self.box_lo, self.box_hi)

    def _slide(self, q_next: np.ndarray, tcp_wanted: np.ndarray, here: np.ndarray) -> np.ndarray | None:
        """Instead of ``q_next``, a step that moves the TCP along the box face toward
        ``tcp_wanted`` (its outward part removed; back inside if it is outside), or None.

        Without it a TCP on the box face whose joint-space step dips outward at once stays
        frozen there while its goal lies elsewhere on the face (teleoperating along the table).
        Joint velocities come from the TCP Jacobian (damped least squares), within the velocity
        and acceleration caps, the joint limits and the Cartesian cap; joints that do not move
        the TCP (the gripper) take their step in ``q_next``.
        """
        dt, a = self.dt, self.acap
        inset = np.minimum(SLIDE_INSET, (self.box_hi - self.box_lo) / 4)  # the face curves under a step
        desired = np.clip(tcp_wanted, self.box_lo + inset, self.box_hi - inset) - here
        if np.linalg.norm(desired) < 1e-9:
            return None
        jac = self.model.jacobian(self._full(self.q), self.ee_link)[:3, : self.n]
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), desired)
        passive = np.linalg.norm(jac, axis=0) < 1e-12
        dq[passive] = (q_next - self.q)[passive]
        v = np.clip(dq / dt, np.maximum(-self.vcap, self.v - a * dt), np.minimum(self.vcap, self.v + a * dt))
        q = np.clip(self.q + v * dt, np.minimum(self.lower, self.q), np.maximum(self.upper, self.q))
        if self._moved(q) > self.config.max_cartesian_speed * dt or not self._box_ok(q, here):
            return None
        return q


def _box_excess(point: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """How far a point lies outside a box (0 inside)."""
    return float(np.linalg.norm(np.maximum(lo - point, 0) + np.maximum(point - hi, 0)))
