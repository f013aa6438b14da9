"""The interface every arm backend shares, with the safety filter built in.

``submit`` takes a trajectory, ``tick`` advances the control loop one period and returns the
command actually sent (after the filter), so whoever records or reports uses that, never the
request. Backends implement ``read_state`` and ``_write``.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from lam_control.robot import RobotConfig
from lam_control.safety import SafetyConfig, SafetyFilter, SafetyStatus
from lam_control.trajectory import Trajectory, TrajectoryFollower

log = logging.getLogger(__name__)


class ArmNotReady(RuntimeError):
    """The arm's state is not known yet (no joint states received)."""


@dataclass
class ArmState:
    """Measured state over the arm's command joints."""

    positions: np.ndarray  # (J,)
    velocities: np.ndarray  # (J,)
    stamp: float  # s, the backend's clock


class Arm(ABC):
    """A robot arm behind the safety filter. Joints are the robot's command_joints."""

    def __init__(self, robot: RobotConfig, safety: SafetyConfig):
        self.robot = robot
        self.model = robot.load_model()
        self.joint_names = robot.command_joints
        self.safety_config = safety
        self.filter: SafetyFilter | None = None
        self.last_status: SafetyStatus | None = None
        self._follower: TrajectoryFollower | None = None
        self._last_tick: float | None = None  # s, when the filter last sent a command
        self._estop_pending = False  # an e-stop that arrived before the first state

    # -- backend ----------------------------------------------------------------------------
    @abstractmethod
    def read_state(self) -> ArmState | None:
        """Latest measured state, or None when it is not known."""

    @abstractmethod
    def _write(self, positions: np.ndarray, velocities: np.ndarray, now: float) -> None:
        """Send a filtered command to the hardware or simulator."""

    def close(self) -> None:
        """Release the backend."""

    # -- control ----------------------------------------------------------------------------
    def _ensure_filter(self) -> SafetyFilter:
        if self.filter is None:
            state = self.read_state()
            if state is None:
                raise ArmNotReady("no joint state received yet; the arm cannot be commanded")
            self.filter = SafetyFilter(self.model, len(self.joint_names), self.safety_config,
                                       state.positions, self.robot.ee_link)
            if self._estop_pending:
                self.filter.estop()
        return self.filter

    def submit(self, trajectory: Trajectory, now: float) -> bool:
        """Start executing a trajectory from the current command. False if the filter refused it.

        Raises TrajectoryError for unknown joint names, ArmNotReady before the first state.
        An empty trajectory means stop: hold where the arm is.
        """
        filt = self._ensure_filter()
        points = trajectory.for_joints(self.joint_names, filt.q)
        if len(points) == 0:
            self._follower = None
            filt.last_command_time = now
            return True
        if not filt.accept_command(points, now):
            self._follower = None
            return False
        # The ramp starts where the last tick left the arm, at that tick's time; the points keep
        # their times from receipt. Ramping from the receipt time instead asks for no motion on
        # the first tick after it (none at all when they coincide, as in simulated time), so a
        # command stream braked the arm once per command: at 60 Hz it barely moved.
        start = now
        if self._last_tick is not None and 0.0 <= now - self._last_tick <= 2.0 * self.safety_config.control_period:
            start = self._last_tick
        self._follower = TrajectoryFollower(start, filt.q.copy(), trajectory.times + (now - start), points)
        return True

    def tick(self, now: float) -> SafetyStatus | None:
        """One control period: sample the trajectory, filter, send. None while not ready."""
        try:
            filt = self._ensure_filter()
        except ArmNotReady:
            return None
        target = self._follower.sample(now) if self._follower is not None else None
        status = filt.step(target, now)
        self._last_tick = now
        if status.holding and status.reason != "idle":
            self._follower = None  # a stop abandons the trajectory; only a new command moves again
        self._write(status.command, filt.v, now)
        self.last_status = status
        return status

    def send(self, positions: np.ndarray, now: float) -> SafetyStatus | None:
        """Command one position over all joints now; returns what was actually sent."""
        self.submit(Trajectory.build(self.joint_names, [0.0], [positions]), now)
        return self.tick(now)

    def estop(self) -> None:
        """Latch a stop; only reset() clears it. Works before the arm is ready too."""
        self._follower = None
        if self.filter is None:
            self._estop_pending = True
        else:
            self.filter.estop()

    def reset(self) -> None:
        """Clear e-stop and faults; the arm holds where it is measured until the next command.

        The filter restarts from the measured pose: a physical arm may have been moved (by hand,
        by its driver) while it was stopped, and motion must continue from where it really is.
        """
        self._follower = None
        self._estop_pending = False
        if self.filter is not None:
            self.filter.reset()
            state = self.read_state()
            if state is not None:
                self.filter.resync(state.positions)
