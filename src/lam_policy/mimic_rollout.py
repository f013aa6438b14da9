"""``lam mimic`` in simulated time, without ROS: a clip through the capture core, a policy and the
sim arm behind the same safety filter, scored with the same figures (``lam_policy.mimic``).

Capture: the looped clip, perturbed and cleaned as capture_node does (``motion_data.captured``),
each published frame delivered at its capture stamp. Policy: ``retarget`` runs the Retargeter on
every new frame from the arm's measured state and sends one point ``command_horizon`` s ahead
(policy_node's retarget mode); ``lam`` runs a learned policy every 1/fps s on the newest frame
and the measured state and sends its chunk (``LamRuntime``'s plan). Control: ``SimArm`` at
``control_rate`` with control.yaml's sim safety limits. Transport latency (~1-10 ms in the real
graph) is left out; everything else is the same code. Used by the learning test and to compare
checkpoints quickly (a run takes ~1-3 s instead of the clip's wall time).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lam_capture.perturb import PerturbConfig
from lam_control.robot import RobotConfig
from lam_control.safety import SafetyConfig
from lam_control.sim_arm import SimArm
from lam_control.trajectory import Trajectory
from lam_policy.frames import KEYPOINTS, STATE, flatten_keypoints
from lam_policy.mimic import first_shown, jerk_rms, reference_path, tracking_error
from lam_policy.motion_data import captured, clip_frames, looped
from lam_policy.retarget import RetargetConfig, Retargeter


@dataclass
class RolloutConfig:
    """One simulated run. Units: s, Hz; perturbation as PerturbConfig (m, probability, 1/s)."""

    clip: str = "punch"
    loops: int = 3  # lam mimic --repeat
    speed: float = 1.0
    perturb: PerturbConfig | None = None  # None: clean
    control_rate: float = 100.0  # Hz, control_node's
    max_cartesian_speed: float = 1.0  # m/s, control.yaml's sim_max_cartesian_speed
    command_horizon: float = 0.05  # s, policy_node's retarget-mode point time

    def __post_init__(self) -> None:
        if self.clip is None or self.loops is None or self.loops < 1:
            raise ValueError(f"RolloutConfig.loops must be >= 1 and clip set, got {self.clip!r}, {self.loops!r}")
        for name in ("speed", "control_rate", "max_cartesian_speed", "command_horizon"):
            value = getattr(self, name)
            if value is None or not (np.isfinite(value) and value > 0):
                raise ValueError(f"RolloutConfig.{name} must be finite and > 0, got {value!r}")


class _Commander:
    """What policy_node does in one mode, on simulated time: ``step(now, newest, q)`` -> a
    Trajectory to submit, or None."""

    def __init__(self, robot: RobotConfig, retarget: RetargetConfig, policy, horizon: float,
                 record: list | None = None):
        self.names = robot.command_joints
        self.policy, self.horizon, self.record = policy, horizon, record
        self.rt = None if policy is not None else Retargeter(robot, retarget)
        self.next_tick: float | None = None
        self.last_frame = None
        if policy is not None:
            policy.reset()

    def step(self, now: float, newest, q: np.ndarray) -> Trajectory | None:
        if self.rt is not None:  # retarget: one command per new frame
            if newest is None or newest is self.last_frame:
                return None
            self.last_frame = newest
            result = self.rt.update(newest, q, now)
            return None if result is None else Trajectory.build(self.names, [self.horizon], [result.q])
        if newest is None or (self.next_tick is not None and now < self.next_tick - 1e-9):
            return None
        period = 1.0 / self.policy.fps  # ticks on a fixed grid, as the runtime's timer
        self.next_tick = now + period if self.next_tick is None else self.next_tick + period
        obs = {STATE: q, KEYPOINTS: flatten_keypoints(newest)}
        if self.record is not None:
            self.record.append((now, obs))
        times, plan = self.policy.select_plan({k: obs[k] for k in self.policy.config.observation_keys})
        return Trajectory.build(self.policy.joint_names, times, plan)


def rollout(config: RolloutConfig, policy=None, robot: RobotConfig | None = None,
            retarget: RetargetConfig | None = None, record: list | None = None) -> dict:
    """Run the clip with ``policy`` (a loaded BasePolicy observing state and keypoints) or, when
    None, live retargeting. Returns lam mimic's tracking figures and the arm's TCP path. With
    ``record`` (a list) and a policy, every policy tick appends (time s, {observation.state,
    observation.keypoints}) to it: the states the policy itself led the arm into (DAgger)."""
    robot, retarget = robot or RobotConfig(), retarget or RetargetConfig()
    clean = clip_frames(config.clip, config.speed)
    stream = looped(clean, config.loops)
    published = captured(stream, config.perturb or PerturbConfig())
    targets, q_start, start_frame = reference_path(robot, retarget, clean, "retarget" if policy is None else "lam")
    arm = SimArm(robot, SafetyConfig(max_cartesian_speed=config.max_cartesian_speed,
                                     control_period=1.0 / config.control_rate))
    try:
        arm.reset_positions(q_start)
        commander = _Commander(robot, retarget, policy, config.command_horizon, record)
        times, tcp, sent = _run(arm, commander, published, stream[-1].stamp + 0.5, 1.0 / config.control_rate)
    finally:
        arm.close()
    frame_log = [(i % len(clean), kp.stamp) for i, kp in enumerate(stream)]
    begin = first_shown(frame_log, start_frame)
    path = tracking_error(frame_log, targets, times, tcp, window=0.5, begin=begin)
    aligned = tracking_error(frame_log, targets, times, tcp, begin=begin)
    lower, upper = arm.model.lower[: len(sent[0])], arm.model.upper[: len(sent[0])]
    return {"tracking_error_mean_mm": float(path.mean() * 1e3),
            "time_aligned_error_mean_mm": float(aligned.mean() * 1e3),
            "command_limit_violations": int(np.sum((sent < lower - 1e-9) | (sent > upper + 1e-9))),
            "tcp_jerk_rms_m_s3": jerk_rms(times, tcp), "times": times, "tcp": tcp}


def _run(arm: SimArm, commander: _Commander, published: list, end: float, dt: float):
    """Control loop on simulated time; (T,) times, (T, 3) TCP positions, (T, J) commands sent."""
    stamps = np.array([kp.stamp for kp in published])
    times, tcp, sent = [], [], []
    for k in range(int(np.ceil(end / dt))):
        now = k * dt
        i = int(np.searchsorted(stamps, now, side="right")) - 1
        q = arm.read_state().positions
        command = commander.step(now, published[i] if i >= 0 else None, q)
        if command is not None:
            arm.submit(command, now)
        status = arm.tick(now)
        if status is not None:
            sent.append(status.command)
        times.append(now)
        tcp.append(arm.tcp_position())
    return np.array(times), np.array(tcp), np.array(sent)
