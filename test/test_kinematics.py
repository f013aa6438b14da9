"""The numpy kinematics agree with PyBullet, its Jacobian with its own FK, and bad URDFs fail loudly.

The safety filter trusts RobotModel for every link's pose at the control rate, with no
simulator in the loop; these tests pin it to PyBullet's link frames for the project's arm and
pybullet_data's Franka Panda, at seeded random configurations inside the URDF limits.
"""
from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from lam_control.kinematics import RobotModel, URDFError
from lam_control.robot import RobotConfig, panda
from lam_control.sim_arm import SimArm

SEED = 20240611
N_CONFIGS = 5
POSITION_TOL_M = 1e-6
ORIENTATION_TOL_RAD = 1e-6
JACOBIAN_TOL = 1e-5
FD_STEP = 1e-6  # rad or m; central differences: truncation ~h^2, round-off ~1e-16/h
ROBOTS = {"lam_arm": RobotConfig, "panda": panda}

MINIMAL_LINK = '<link name="{}"/>'
TWO_ROOTS_URDF = """<?xml version="1.0"?>
<robot name="two_roots">
  <link name="base_a"/>
  <link name="base_b"/>
  <link name="arm"/>
  <joint name="j" type="revolute">
    <parent link="base_a"/><child link="arm"/><axis xyz="0 0 1"/>
    <limit lower="-1" upper="1" velocity="1" effort="1"/>
  </joint>
</robot>
"""


@pytest.fixture(scope="module", params=sorted(ROBOTS))
def sim(request):
    """(RobotConfig, SimArm) for each robot, one PyBullet client per module."""
    robot = ROBOTS[request.param]()
    arm = SimArm(robot)
    try:
        yield robot, arm
    finally:
        arm.close()


def random_configs(model: RobotModel, n_command: int, seed: int) -> list[np.ndarray]:
    """Seeded uniform configurations over the command joints, inside the URDF limits."""
    rng = np.random.default_rng(seed)
    lower, upper = model.lower[:n_command], model.upper[:n_command]
    return [rng.uniform(lower, upper) for _ in range(N_CONFIGS)]


def full_config(model: RobotModel, q_command: np.ndarray) -> np.ndarray:
    """The model's configuration: command joints first, every other movable joint at 0."""
    return np.concatenate([q_command, np.zeros(len(model.joint_names) - len(q_command))])


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (rad) of the rotation taking a to b, accurate for tiny angles (no arccos)."""
    rel = a.T @ b
    skew = 0.5 * np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
    return float(np.arctan2(np.linalg.norm(skew), (np.trace(rel) - 1.0) / 2.0))


def rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis * angle of a small rotation matrix (log map; angle well below pi)."""
    skew = 0.5 * np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    sin = np.linalg.norm(skew)
    angle = np.arctan2(sin, (np.trace(rot) - 1.0) / 2.0)
    return skew if sin < 1e-12 else skew * (angle / sin)


def test_fk_matches_pybullet_link_frames(sim):
    robot, arm = sim
    model = robot.load_model()
    n = len(robot.command_joints)
    for q in random_configs(model, n, SEED):
        arm.reset_positions(q)
        frames = model.forward(full_config(model, q))  # (L, 4, 4)
        poses = arm.link_poses()
        assert set(poses) == set(model.link_names), "PyBullet and the URDF parser disagree on links"
        for name, (position, quaternion) in poses.items():
            frame = frames[model.link_index[name]]
            error = np.linalg.norm(frame[:3, 3] - position)
            assert error <= POSITION_TOL_M, f"{name} at q={q}: position off by {error:.3g} m"
            bullet_rot = np.array(p.getMatrixFromQuaternion(quaternion)).reshape(3, 3)
            angle = rotation_angle(frame[:3, :3], bullet_rot)
            assert angle <= ORIENTATION_TOL_RAD, f"{name} at q={q}: orientation off by {angle:.3g} rad"


def finite_difference_jacobian(model: RobotModel, q: np.ndarray, link: str) -> np.ndarray:
    """(6, n) central difference of the link origin (rows 0-2) and orientation (rows 3-5)."""
    index = model.link_index[link]
    jac = np.zeros((6, len(q)))
    for i in range(len(q)):
        dq = np.zeros(len(q))
        dq[i] = FD_STEP
        plus, minus = model.forward(q + dq)[index], model.forward(q - dq)[index]
        jac[:3, i] = (plus[:3, 3] - minus[:3, 3]) / (2 * FD_STEP)
        # World-frame angular velocity: the rotation from minus to plus, expressed in the world.
        jac[3:, i] = rotation_vector(plus[:3, :3] @ minus[:3, :3].T) / (2 * FD_STEP)
    return jac


@pytest.mark.parametrize("robot_name", sorted(ROBOTS))
def test_jacobian_matches_finite_difference(robot_name):
    robot = ROBOTS[robot_name]()
    model = robot.load_model()
    for q_command in random_configs(model, len(robot.command_joints), SEED + 1):
        q = full_config(model, q_command)
        frames = model.forward(q)
        for link in model.link_names:
            analytic = model.jacobian(q, link, frames)
            numeric = finite_difference_jacobian(model, q, link)
            error = np.abs(analytic - numeric).max()
            assert error <= JACOBIAN_TOL, f"{robot_name} {link} at q={q}: Jacobian off by {error:.3g}"


def test_missing_urdf_is_reported(tmp_path):
    path = tmp_path / "nowhere.urdf"
    with pytest.raises(URDFError, match="not found") as info:
        RobotModel.from_urdf(path)
    assert str(path) in str(info.value)


def test_non_xml_urdf_is_reported(tmp_path):
    path = tmp_path / "broken.urdf"
    path.write_text("this is not <xml at all")
    with pytest.raises(URDFError, match="not valid XML") as info:
        RobotModel.from_urdf(path)
    assert str(path) in str(info.value)


def test_urdf_with_two_roots_is_reported(tmp_path):
    path = tmp_path / "two_roots.urdf"
    path.write_text(TWO_ROOTS_URDF)
    with pytest.raises(URDFError, match="exactly one root link") as info:
        RobotModel.from_urdf(path)
    assert "base_a" in str(info.value) and "base_b" in str(info.value)


def test_urdf_with_wrong_top_element_is_reported(tmp_path):
    path = tmp_path / "not_robot.urdf"
    path.write_text(f"<model>{MINIMAL_LINK.format('base')}</model>")
    with pytest.raises(URDFError, match="<model>"):
        RobotModel.from_urdf(path)


@pytest.mark.parametrize("robot_name", sorted(ROBOTS))
def test_load_model_refuses_unknown_joint(robot_name):
    robot = ROBOTS[robot_name]()
    robot.joint_names = robot.joint_names[:-1] + ["no_such_joint"]
    with pytest.raises(URDFError, match="no_such_joint"):
        robot.load_model()


def test_load_model_refuses_unknown_ee_link():
    with pytest.raises(URDFError, match="no_such_link"):
        RobotConfig(ee_link="no_such_link").load_model()


@pytest.mark.parametrize("robot_name", sorted(ROBOTS))
def test_load_model_orders_command_joints_first(robot_name):
    robot = ROBOTS[robot_name]()
    model = robot.load_model()
    assert model.joint_names[: len(robot.command_joints)] == robot.command_joints
