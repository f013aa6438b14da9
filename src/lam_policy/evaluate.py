"""Closed-loop evaluation of a policy on a sim task: the policy at its own rate, the safety filter
and PyBullet at the control rate, all in simulated time (faster than real time, same code path
as control_node's sim backend: SimArm.submit/tick behind the same SafetyConfig).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from lam_control.robot import RobotConfig
from lam_control.safety import SafetyConfig
from lam_control.sim_arm import SimArm
from lam_control.tasks import make_task
from lam_control.trajectory import Trajectory
from lam_policy.features import TcpFeature
from lam_policy.frames import OBJECT_POSES, STATE, TCP


@dataclass
class EvalConfig:
    """Rollout settings. Units: s, Hz."""

    episodes: int = 20
    seed: int = 1000  # first seed; episode i uses seed + i (training demos use other seeds)
    control_rate: float = 100.0  # Hz, safety filter and physics commands (control_node's rate)
    # The sim safety limits of config/control.yaml (velocity_scale 0.5, 1 m/s Cartesian).
    max_cartesian_speed: float = 1.0
    time_limit: float = 0.0  # s per episode; 0 = the task's own limit

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"EvalConfig.{name} must not be None")
        if self.episodes < 1:
            raise ValueError(f"EvalConfig.episodes must be >= 1, got {self.episodes}")
        for name in ("control_rate", "max_cartesian_speed"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"EvalConfig.{name} must be finite and > 0, got {getattr(self, name)!r}")
        if not (np.isfinite(self.time_limit) and self.time_limit >= 0):
            raise ValueError(f"EvalConfig.time_limit must be >= 0 s, got {self.time_limit!r}")


def observation(arm: SimArm, task, policy, tcp: TcpFeature | None = None) -> dict[str, np.ndarray]:
    """This instant's observation, by name: joint positions in the policy's joint order (the
    dataset's observation.state), the task's object poses flattened (M * 7) and, with ``tcp``,
    the derived observation.tcp."""
    state = arm.read_state()
    by_name = dict(zip(arm.joint_names, state.positions))
    missing = [j for j in policy.joint_names if j not in by_name]
    if missing:
        raise ValueError(f"the policy commands joints {missing} that the arm does not have: {arm.joint_names}")
    obs = {STATE: np.array([by_name[j] for j in policy.joint_names])}
    if OBJECT_POSES in policy.features:
        obs[OBJECT_POSES] = task.object_poses().reshape(-1)
    if TCP in policy.features:
        if tcp is None:
            raise ValueError("the policy observes observation.tcp: pass the TcpFeature of the arm")
        obs[TCP] = tcp.compute(obs[STATE], task.object_poses().reshape(-1) if policy.features[TCP] > 3 else None)
    return obs


def evaluate(policy, task_name: str, config: EvalConfig | None = None,
             robot: RobotConfig | None = None) -> dict:
    """Roll the policy out on ``config.episodes`` seeded episodes; success rate, episode time,
    safety interventions and inference latency."""
    c = config or EvalConfig()
    robot = robot or RobotConfig()
    arm = SimArm(robot, SafetyConfig(max_cartesian_speed=c.max_cartesian_speed,
                                     control_period=1.0 / c.control_rate))
    try:
        task = make_task(task_name, arm)
        tcp = TcpFeature(robot, policy.joint_names) if TCP in policy.features else None
        limit = c.time_limit or task.time_limit
        dt, period = 1.0 / c.control_rate, 1.0 / policy.fps
        clock = 0.0  # sim time runs on across episodes (SimArm keeps one clock)
        episodes, interventions, latency = [], Counter(), []
        for i in range(c.episodes):
            task.reset(c.seed + i)
            policy.reset()
            start, next_policy, success, nonfinite = clock, clock, False, 0
            while clock - start < limit:
                if clock >= next_policy - 1e-9:
                    t0 = time.perf_counter()
                    action = np.asarray(policy.select_action(observation(arm, task, policy, tcp)), dtype=float)
                    latency.append(time.perf_counter() - t0)
                    nonfinite += int(not np.all(np.isfinite(action)))
                    arm.submit(Trajectory.build(policy.joint_names, [0.0], [action]), clock)
                    next_policy += period
                    if task.success():
                        success = True
                        break
                status = arm.tick(clock)
                if status is not None:
                    interventions.update(status.interventions)
                clock += dt
            episodes.append({"seed": c.seed + i, "success": success, "time_s": round(clock - start, 3),
                             "nonfinite_actions": nonfinite, "final": task.info()})
    finally:
        arm.close()
    times = np.array([e["time_s"] for e in episodes])
    ok = np.array([e["success"] for e in episodes])
    ms = np.asarray(latency) * 1e3
    return {
        "task": task_name, "episodes": len(episodes), "success_rate": round(float(ok.mean()), 3),
        "mean_episode_time_s": round(float(times.mean()), 3),
        "mean_success_time_s": round(float(times[ok].mean()), 3) if ok.any() else None,
        "interventions": dict(interventions),
        "interventions_per_episode": round(sum(interventions.values()) / len(episodes), 1),
        "nonfinite_actions": int(sum(e["nonfinite_actions"] for e in episodes)),
        "inference_p50_ms": round(float(np.percentile(ms, 50)), 3) if ms.size else None,
        "inference_p99_ms": round(float(np.percentile(ms, 99)), 3) if ms.size else None,
        "per_episode": episodes,
    }
