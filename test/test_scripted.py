"""The scripted operator: a plausible, seeded, imperfect person, and the teleop path it drives.

The success test runs the whole teleoperation core in simulated time at the real rates: the
operator (30 Hz keypoints, reaction delay included) -> the capture cleaner (as capture_node
applies it) -> Retargeter -> one-point JointTrajectory with policy_node's 0.05 s horizon ->
SimArm's safety filter at 100 Hz -> PyBullet; the operator watches the scene at control_node's
100 Hz state rate.
"""
import time

import numpy as np
import pytest

from lam_capture.filters import CleanerConfig, KeypointCleaner
from lam_capture.scripted import OperatorConfig, ScriptedOperator, ScriptedSource, inverse_map, solve_elbow
from lam_capture.skeleton import NUM_LANDMARKS, RIGHT_HAND
from lam_capture.sources import SourceError, SourceOptions, open_source
from lam_control.robot import RobotConfig
from lam_control.safety import SafetyConfig
from lam_control.sim_arm import SimArm
from lam_control.tasks import TASKS, make_task
from lam_control.trajectory import Trajectory
from lam_policy.retarget import RetargetConfig, Retargeter, read_arm

CAPTURE_DT = 1.0 / 30.0  # s
CONTROL_DT = 0.01  # s
HORIZON = 0.05  # s, policy_node's command_horizon
EPISODES = 10


def frames(op, seconds, start=0.0):
    return [op.keypoints(start + k * CAPTURE_DT) for k in range(int(seconds / CAPTURE_DT))]


def test_keypoints_are_a_complete_plausible_standing_body():
    op = ScriptedOperator(OperatorConfig(task="reach", noise=0.0, dropout=0.0))
    for kp in frames(op, 1.0):
        assert kp.points.shape == (NUM_LANDMARKS, 3) and kp.confidence.shape == (NUM_LANDMARKS,)
        assert np.all(np.isfinite(kp.points)) and np.all((kp.confidence >= 0) & (kp.confidence <= 1))
        assert np.all(kp.confidence > 0.5), "without dropouts every landmark is seen"
    p = kp.point
    assert p("nose")[1] > p("left_shoulder")[1] > p("left_hip")[1] > p("left_knee")[1] > p("left_ankle")[1]
    assert p("left_shoulder")[0] > 0 > p("right_shoulder")[0], "x is the operator's left"
    assert abs(0.5 * (p("left_hip") + p("right_hip"))).max() < 1e-9, "origin at mid-hip"
    for side in ("left", "right"):
        upper = np.linalg.norm(p(f"{side}_elbow") - p(f"{side}_shoulder"))
        fore = np.linalg.norm(p(f"{side}_wrist") - p(f"{side}_elbow"))
        assert abs(upper - 0.30) < 1e-6 and abs(fore - 0.26) < 1e-6
        assert np.linalg.norm(p(f"{side}_hand_wrist") - p(f"{side}_wrist")) < 1e-9
    # A real elbow: bent (not a straight arm) and behind the shoulder-wrist line, not in front.
    s, e, w = p("right_shoulder"), p("right_elbow"), p("right_wrist")
    assert np.linalg.norm(w - s) < 0.5
    assert e[2] < (s[2] + w[2]) / 2
    # Hand: 21 landmarks, a palm frame for orientation, an open pinch (gripper open above 0.05 m).
    arm = read_arm(kp, "right", 0.5)
    assert arm.hand_rot is not None and np.allclose(arm.hand_rot.T @ arm.hand_rot, np.eye(3), atol=1e-9)
    assert np.linalg.norm(kp.points[RIGHT_HAND + 4] - kp.points[RIGHT_HAND + 8]) > 0.06


def test_the_pinch_closes_when_the_plan_grasps():
    op = ScriptedOperator(OperatorConfig(task="pick_place", noise=0.0, dropout=0.0, reaction_delay=0.0))
    op.closed = True
    op.expert.step = lambda *a, **k: (op.home_tcp, True)  # a plan that grasps where it is
    op.observe(np.zeros((2, 7)) + [0, 0, 0, 0, 0, 0, 1], [], [], 0.0)
    kp = frames(op, 1.0)[-1]
    assert np.linalg.norm(kp.points[RIGHT_HAND + 4] - kp.points[RIGHT_HAND + 8]) < 0.02


def test_noise_and_dropout_match_the_config():
    config = dict(task="push", seed=5)
    clean = ScriptedOperator(OperatorConfig(noise=0.0, dropout=0.0, **config))
    noisy = ScriptedOperator(OperatorConfig(noise=0.01, dropout=0.05, **config))
    a, b = frames(clean, 6.0), frames(noisy, 6.0)
    diff = np.concatenate([y.points - x.points for x, y in zip(a, b)])  # (F * 75, 3)
    assert abs(diff.std() - 0.01) < 0.0005, f"noise std {diff.std():.4f} m"
    assert abs(diff.mean()) < 0.0005
    conf = np.concatenate([y.confidence for y in b])
    assert abs(np.mean(conf == 0) - 0.05) < 0.01, f"dropout rate {np.mean(conf == 0):.3f}"
    seen = conf[conf > 0]
    assert seen.min() >= 0.85 and seen.max() <= 1.0


def test_same_seed_same_operator_and_episodes_differ():
    one, two = (ScriptedOperator(OperatorConfig(task="reach", seed=2)) for _ in range(2))
    for op in (one, two):
        op.reset(7)
    for x, y in zip(frames(one, 1.0), frames(two, 1.0)):
        assert np.array_equal(x.points, y.points) and np.array_equal(x.confidence, y.confidence)
    speeds = set()
    for seed in range(6):
        one.reset(seed)
        speeds.add(round(one.speed, 6))
    lo, hi = one.config.speed_range
    assert len(speeds) == 6 and all(lo <= s <= hi for s in speeds), "speed varies between episodes"


def test_inverse_map_round_trips_through_retargeting():
    op = ScriptedOperator(OperatorConfig(task="reach", noise=0.0, dropout=0.0))
    rt = op.retargeter
    rt.scale = op.scale
    shoulder = op.right_shoulder
    rng = np.random.default_rng(0)
    for target in rng.uniform([0.2, -0.2, 0.05], [0.45, 0.2, 0.4], (50, 3)):
        assert np.linalg.norm(rt.map_point(inverse_map(rt, op.scale, target, shoulder), shoulder) - target) < 1e-9
    elbow, wrist = solve_elbow(shoulder, shoulder + [0.0, -0.9, 0.0], 0.3, 0.26, np.array([0, 0, -1.0]))
    assert np.linalg.norm(wrist - shoulder) <= 0.56 and abs(np.linalg.norm(elbow - shoulder) - 0.3) < 1e-9


def test_config_errors_name_the_field():
    for kwargs, field in (({"noise": -0.01}, "noise"), ({"dropout": 1.5}, "dropout"), ({"task": "stack"}, "task"),
                          ({"speed_range": [0.3, 0.1]}, "speed_range"), ({"reaction_delay": None}, "reaction_delay"),
                          ({"pinch_closed": 0.1}, "pinch_closed")):
        with pytest.raises(ValueError, match=field):
            OperatorConfig(**kwargs)
    with pytest.raises(ValueError, match="object poses"):
        ScriptedOperator(OperatorConfig(task="push")).observe(np.zeros((1, 7)), [], [], 0.0)


def test_scripted_source_spec_emits_keypoint_frames_at_30hz():
    with pytest.raises(SourceError, match="stack"):
        open_source("scripted:stack")
    source = open_source("scripted:reach", SourceOptions(extra={"operator": OperatorConfig(seed=1)}))
    assert isinstance(source, ScriptedSource) and source.operator.config.task == "reach"
    source.observe(np.array([[0.3, 0.0, 0.2, 0, 0, 0, 1.0]]), RobotConfig().command_joints,
                   RobotConfig().home_positions(), time.monotonic())
    got = [source.read(timeout=1.0) for _ in range(16)]
    assert all(f is not None and f.image is None and f.keypoints is not None for f in got)
    stamps = np.array([f.stamp for f in got])
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 27.0 < rate < 33.0, f"{rate:.1f} Hz"
    source.reset(3)
    assert source.operator.episode_seed == 3
    source.close()
    assert source.finished and source.read(0.1) is None


def run_teleop(name, seeds):
    """Episodes of the scripted operator teleoperating the sim task; [(success, seconds)]."""
    arm = SimArm(RobotConfig(), SafetyConfig(max_cartesian_speed=1.0))  # control_node's sim caps
    try:
        task = make_task(name, arm)
        operator = ScriptedOperator(OperatorConfig(task=name, seed=11))
        retargeter = Retargeter(RobotConfig(), RetargetConfig())  # policy_node's defaults
        cleaner = KeypointCleaner(CleanerConfig())  # capture_node's defaults (smoothing on)
        names, t, results = arm.joint_names, 0.0, []
        for seed in seeds:  # one long session, as the nodes run it: only task and operator reset
            task.reset(seed)
            operator.reset(seed)
            start, next_frame, done = t, t, False
            while t - start < task.time_limit and not done:
                if t >= next_frame - 1e-9:
                    next_frame += CAPTURE_DT
                    kp = cleaner.update(operator.keypoints(t))
                    if kp is not None:
                        result = retargeter.update(kp, arm.read_state().positions, kp.stamp)
                        if result is not None:
                            arm.submit(Trajectory.build(names, [HORIZON], [result.q]), t)
                t = round(t + CONTROL_DT, 9)
                arm.tick(t)
                operator.observe(task.object_poses(), names, arm.read_state().positions, t)
                done = task.success()
            results.append((done, t - start))
        return results
    finally:
        arm.close()


def check_rate(name):
    results = run_teleop(name, range(EPISODES))
    wins = sum(ok for ok, _ in results)
    durations = [round(s, 1) for ok, s in results if ok]
    print(f"{name}: {wins}/{EPISODES} succeeded, episode seconds {durations}")
    assert wins >= 0.9 * EPISODES, f"{name}: {wins}/{EPISODES} episodes succeeded ({results})"


@pytest.mark.parametrize("name", TASKS)
def test_scripted_operator_solves_task_through_teleop(name):
    check_rate(name)
