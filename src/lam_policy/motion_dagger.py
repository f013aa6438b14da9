"""DAgger for motion imitation: frames from the states a trained policy itself leads the arm into.

``lam_policy.motion_data`` observes the arm while it follows the teacher, so a policy trained on
it has only seen states near the teacher's path; closed loop, its own small errors move the arm
off that path, and it never learnt what to do there (on clean ``run`` it tracked 127 mm against
the teacher's 68 mm, with an open-loop error of only 9 mm). Here each (clip, speed,
perturbation) is run closed loop with the policy (``mimic_rollout``, simulated time), every
policy tick's observation is kept, and it is labelled with the teacher's joint targets at that
tick + ``action_lead`` (the teacher is a time-indexed plan, so the label does not depend on where
the arm is). Training on these frames together with the teacher-following ones teaches the policy
to come back to the plan. Same arrays and layout as ``motion_data``; no torch imported here (the
policy is passed in).
"""
from __future__ import annotations

import logging

import numpy as np

from lam_control.robot import RobotConfig
from lam_policy.frames import ACTION, EPISODE, KEYPOINTS, STATE, Frames
from lam_policy.mimic_rollout import RolloutConfig, rollout
from lam_policy.motion_data import (MimicDataConfig, assemble, clip_frames, draw_perturbation, episode_entry,
                                    labelled, looped)
from lam_policy.motion_teacher import TeacherConfig, teacher_trajectory
from lam_policy.retarget import RetargetConfig

log = logging.getLogger(__name__)


def dagger_episode(record: list, teacher: tuple[np.ndarray, np.ndarray], robot: RobotConfig,
                   config: MimicDataConfig, rng: np.random.Generator) -> dict[str, np.ndarray] | None:
    """One episode's arrays from a rollout's ``record`` [(time s, {state, keypoints})], labelled
    with the teacher (times (F,), q (F, n_cmd)); ticks after the teacher's end are dropped.
    The state gets the same drift and noise as ``motion_data``'s. None if no tick is left."""
    t_teach, q_teach = teacher
    kept = [(t, obs) for t, obs in record if t <= t_teach[-1]]
    if not kept:
        return None
    state = np.stack([obs[STATE] for _, obs in kept])
    if state.shape[1] != q_teach.shape[1]:
        raise ValueError(f"the policy's state has {state.shape[1]} joints, the teacher's targets {q_teach.shape[1]}")
    return labelled(np.array([t for t, _ in kept]), state, np.stack([obs[KEYPOINTS] for _, obs in kept]),
                    teacher, robot, config, rng)


def build_dagger_frames(policy, config: MimicDataConfig | None = None, robot: RobotConfig | None = None,
                        retarget: RetargetConfig | None = None,
                        teacher: TeacherConfig | None = None) -> tuple[Frames, dict]:
    """Frames (and a report) from ``policy`` (a loaded BasePolicy observing observation.state and
    observation.keypoints, at ``config.fps``) run closed loop on every (clip, speed, variant) of
    ``config``; variant 0 is unperturbed, the others drawn as ``motion_data`` draws them."""
    config = config or MimicDataConfig()
    robot = robot or RobotConfig()
    retarget, teacher = retarget or RetargetConfig(), teacher or TeacherConfig()
    keys = set(policy.config.observation_keys)
    if KEYPOINTS not in keys or not keys <= {STATE, KEYPOINTS}:
        raise ValueError(f"DAgger needs a motion-imitation policy (observation.keypoints [+ observation.state]); "
                         f"this one observes {sorted(keys)}")
    if list(policy.joint_names) != list(robot.command_joints):
        raise ValueError(f"the policy's joints {policy.joint_names} are not the robot's {robot.command_joints}")
    if abs(policy.fps - config.fps) > 1e-9:
        raise ValueError(f"the policy runs at {policy.fps:g} Hz, the frames are at {config.fps:g} Hz")
    rng = np.random.default_rng(config.seed)
    parts, episodes = [], []
    for clip in config.clips:
        for speed in config.speeds:
            teach = teacher_trajectory(robot, looped(clip_frames(clip, speed), config.loops), retarget, teacher)
            for variant in range(config.variants):
                perturb = draw_perturbation(rng, config, variant, int(rng.integers(2**31)))
                record: list = []
                run = RolloutConfig(clip=clip, loops=config.loops, speed=speed, perturb=perturb,
                                    control_rate=config.control_rate,
                                    max_cartesian_speed=config.max_cartesian_speed)
                result = rollout(run, policy, robot, retarget, record=record)
                arrays = dagger_episode(record, teach, robot, config, rng)
                if arrays is None:
                    log.warning("%s at speed %g, variant %d: the policy never ticked; skipped", clip, speed, variant)
                    continue
                arrays[EPISODE] = np.full(len(arrays[ACTION]), len(episodes), dtype=np.int64)
                parts.append(arrays)
                episodes.append(episode_entry(clip, speed, perturb, len(arrays[ACTION]),
                                              tracking_error_mean_mm=round(result["tracking_error_mean_mm"], 1)))
        log.info("dagger data: %s done (%d episodes so far)", clip, len(episodes))
    frames, report = assemble(parts, episodes, robot, config)
    report["policy_tracking_error_mean_mm"] = round(float(np.mean([e["tracking_error_mean_mm"] for e in episodes])), 1)
    return frames, report
