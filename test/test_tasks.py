"""Sim tasks on real PyBullet: seeded resets, success tests, and solvability by a privileged
controller (the task's expert plan through IK, stepped in simulated time behind the safety filter)."""
import json

import numpy as np
import pytest

from lam_control.robot import RobotConfig
from lam_control.safety import SafetyConfig
from lam_control.sim_arm import SimArm
from lam_control.tasks import TASKS, ExpertConfig, TaskConfig, TaskExpert, make_task
from lam_policy.ik import IKConfig, IKSolver

CONTROL_DT = 0.01  # s, control_node's 100 Hz
SOLVE_EVERY = 3  # IK at ~33 Hz, as retargeting runs at the capture rate
SPEED = 0.25  # m/s, TCP waypoint speed of the privileged controller


@pytest.fixture(scope="module")
def arm():
    arm = SimArm(RobotConfig(), SafetyConfig(max_cartesian_speed=1.0))  # control_node's sim cap
    yield arm
    arm.close()


@pytest.fixture
def scene(arm):
    made = []

    def build(name):
        task = make_task(name, arm)
        made.append(task)
        return task

    yield build
    import pybullet as p
    for task in made:  # props out of the shared arm's scene so tasks do not collide
        for body in task.bodies:
            p.removeBody(body, physicsClientId=arm.client)


def solve(arm, task, seed, rng_speed=SPEED):
    """Run the expert through IK until success or the time limit; (success, seconds)."""
    task.reset(seed)
    expert = TaskExpert(task.name, task.config)
    n_arm = len(arm.robot.joint_names)
    ik = IKSolver(arm.model, arm.robot.joint_names, arm.robot.ee_link,
                  IKConfig(restarts=0, max_iterations=15, orientation_weight=0.05))
    pad = np.zeros(len(arm.model.joint_names) - len(arm.joint_names))
    q = arm.robot.home_positions()
    down = arm.model.forward(np.concatenate([q, pad]))[arm.model.link_index[arm.robot.ee_link]][:3, :3]
    aim = arm.tcp_position()
    start, tick = arm.time, 0
    while tick * CONTROL_DT < task.time_limit:
        if tick % SOLVE_EVERY == 0:
            measured = arm.read_state().positions
            target, closed = expert.step(task.object_poses(), arm.tcp_position(), tick * CONTROL_DT,
                                         float(np.mean(measured[n_arm:])))
            step = target - aim
            aim = aim + step * min(1.0, rng_speed * SOLVE_EVERY * CONTROL_DT / max(np.linalg.norm(step), 1e-9))
            q = ik.solve(aim, down, np.concatenate([measured, pad])).q[: len(q)].copy()
            q[n_arm:] = 0.0 if closed else arm.robot.gripper_home
        tick += 1
        arm.send(q, start + tick * CONTROL_DT)
        if task.success():
            return True, tick * CONTROL_DT
    return False, tick * CONTROL_DT


@pytest.mark.parametrize("name", TASKS)
def test_reset_is_deterministic_per_seed_and_starts_unsolved(arm, scene, name):
    task = scene(name)
    assert task.name == name and task.time_limit > 0
    task.reset(3)
    first = task.object_poses()
    assert first.shape == (len(task.object_names), 7) and np.all(np.isfinite(first))
    assert np.allclose(np.linalg.norm(first[:, 3:], axis=1), 1.0, atol=1e-6)  # unit quaternions
    assert task.success() is False  # a Python bool: a numpy bool serialises wrongly in ROS
    task.reset(3)
    assert np.allclose(task.object_poses(), first, atol=1e-9), "same seed, different scene"
    task.reset(4)
    assert np.abs(task.object_poses() - first).max() > 0.01, "different seeds gave the same scene"
    home_tcp = arm.tcp_position()
    task.reset(3)
    assert np.linalg.norm(arm.tcp_position() - home_tcp) < 1e-6, "reset must teleport the arm home"
    info = task.info()
    assert info["task"] == name and info["seed"] == 3 and info["success"] is False
    json.dumps(info)  # JSON-safe


@pytest.mark.parametrize("name", TASKS)
def test_random_placements_stay_in_the_configured_work_area(arm, scene, name):
    task = scene(name)
    c = task.config
    for seed in range(30):
        task.reset(seed)
        poses = task.object_poses()
        for label, pose in zip(task.object_names, poses):
            high = label in ("bin", "target")
            xs, ys = (c.high_x_range, c.high_y_range) if high else (c.x_range, c.y_range)
            assert xs[0] - 1e-9 <= pose[0] <= xs[1] + 1e-9 and ys[0] - 1e-9 <= pose[1] <= ys[1] + 1e-9, \
                f"{name} seed {seed}: {label} at {pose[:2]} outside {xs} x {ys}"
        if name == "pick_place":
            assert np.linalg.norm(poses[0, :2] - poses[1, :2]) >= c.min_separation
        if name == "push":
            assert c.push_distance[0] - 1e-9 <= np.linalg.norm(poses[0, :2] - poses[1, :2]) <= c.push_distance[1] + 1e-9


@pytest.mark.parametrize("name", TASKS)
def test_privileged_controller_solves_every_seed(arm, scene, name):
    """The expert plan through IK and the safety filter: every one of 8 seeds within the time
    limit (grasps hold by friction alone: nothing attaches the cube)."""
    task = scene(name)
    results = [solve(arm, task, seed) for seed in range(8)]
    failed = [seed for seed, (ok, _) in enumerate(results) if not ok]
    assert not failed, f"{name}: unsolved seeds {failed}"
    assert max(t for _, t in results) < 0.5 * task.time_limit
    if name == "pick_place":  # the cube really is in the bin, resting on its floor
        poses = task.object_poses()
        assert np.linalg.norm(poses[0, :2] - poses[1, :2]) < task.config.bin_inner / 2
        assert poses[0, 2] < task.config.bin_height


def test_pick_place_is_not_success_while_the_cube_is_held_over_the_bin(arm, scene):
    task = scene("pick_place")
    task.reset(0)
    import pybullet as p
    bin_pose = task.object_poses()[1]
    # Cube teleported into the bin but the fingers closed around it: not released, not success.
    p.resetBasePositionAndOrientation(task.cube, [bin_pose[0], bin_pose[1], 0.05], [0, 0, 0, 1],
                                      physicsClientId=arm.client)
    assert task.in_bin()
    p.resetBasePositionAndOrientation(task.cube, [bin_pose[0], bin_pose[1], 0.3], [0, 0, 0, 1],
                                      physicsClientId=arm.client)
    assert not task.in_bin() and not task.success()  # above the walls


def test_bad_task_name_and_bad_config_are_rejected(arm):
    with pytest.raises(ValueError, match="valid tasks are reach, push, pick_place"):
        make_task("stack", arm)
    with pytest.raises(ValueError, match="TaskExpert|valid tasks"):
        TaskExpert("stack")
    with pytest.raises(ValueError, match="cube_size"):
        TaskConfig(cube_size=-0.05)
    with pytest.raises(ValueError, match="x_range"):
        TaskConfig(x_range=[0.4, 0.3])
    with pytest.raises(ValueError, match="bin_inner"):
        TaskConfig(bin_inner=0.05)
    with pytest.raises(ValueError, match="time_limits"):
        TaskConfig(time_limits={"reach": 10.0})
    with pytest.raises(ValueError, match="cube_mass"):
        TaskConfig(cube_mass=None)
    with pytest.raises(ValueError, match="ExpertConfig.hover"):
        ExpertConfig(hover=0.0)


def test_reset_keeps_a_latched_estop(arm, scene):
    task = scene("reach")
    task.reset(0)
    arm.send(arm.robot.home_positions(), arm.time + 0.01)
    arm.estop()
    task.reset(1)
    assert arm.filter is None or arm.filter.estopped or arm._estop_pending
    status = arm.send(arm.robot.home_positions(), arm.time + 0.02)
    assert status.holding and status.reason == "estop"
    arm.reset()
