"""The derived observation.tcp feature: forward kinematics against PyBullet's own TCP, object
offsets, the dataset path and the default observation keys of `lam train`."""
from __future__ import annotations

import numpy as np
import pytest

from lam_control.robot import RobotConfig, panda
from lam_control.sim_arm import SimArm
from lam_control.tasks import make_task
from lam_policy.features import TcpFeature, add_tcp_feature
from lam_policy.frames import ACTION, EPISODE, OBJECT_POSES, STATE, TCP, Frames
from lam_policy.learn_cli import default_absolute_action_joints, default_observation_keys

ROBOT = RobotConfig()


def test_tcp_matches_pybullet_and_offsets_point_at_the_objects():
    arm = SimArm(ROBOT)
    try:
        task = make_task("push", arm)
        task.reset(3)
        feature = TcpFeature(ROBOT, ROBOT.command_joints)
        model = ROBOT.load_model()
        rng = np.random.default_rng(0)
        n_arm = len(ROBOT.joint_names)
        for _ in range(5):
            q = ROBOT.home_positions()
            q[:n_arm] = rng.uniform(model.lower[:n_arm], model.upper[:n_arm]) * 0.8
            arm.reset_positions(q)
            poses = task.object_poses()
            out = feature.compute(arm.read_state().positions, poses.reshape(-1))
            assert out.shape == (3 + 3 * len(poses),)
            np.testing.assert_allclose(out[:3], arm.tcp_position(), atol=1e-4)
            np.testing.assert_allclose(out[3:].reshape(-1, 3), poses[:, :3] - arm.tcp_position(), atol=1e-4)
    finally:
        arm.close()


def test_tcp_needs_the_arm_joints_in_the_state():
    with pytest.raises(ValueError, match="arm joint"):
        TcpFeature(ROBOT, ROBOT.command_joints[2:])
    feature = TcpFeature(ROBOT, list(reversed(ROBOT.command_joints)))  # by name, not by position
    q = ROBOT.home_positions()
    np.testing.assert_allclose(feature.tcp(q[::-1]), TcpFeature(ROBOT, ROBOT.command_joints).tcp(q))
    with pytest.raises(ValueError, match="7 values per object"):
        feature.compute(q, np.zeros(6))


def test_frames_gain_the_feature_and_lam_train_observes_it_by_default():
    n, names = 12, ROBOT.command_joints
    q = np.tile(ROBOT.home_positions(), (n, 1)).astype(np.float32)
    poses = np.tile([0.4, 0.1, 0.2, 0, 0, 0, 1], (n, 1)).astype(np.float32)
    base = {STATE: q, ACTION: q, EPISODE: np.repeat([0, 1], n // 2)}
    plain = Frames(dict(base), names, 30.0)
    assert default_observation_keys(plain) == [STATE]
    with_objects = add_tcp_feature(Frames({**base, OBJECT_POSES: poses}, names, 30.0), ROBOT)
    assert with_objects.data[TCP].shape == (n, 6)
    tcp = TcpFeature(ROBOT, names).tcp(ROBOT.home_positions())
    np.testing.assert_allclose(with_objects.data[TCP][0], np.r_[tcp, poses[0, :3] - tcp], atol=1e-5)
    assert default_observation_keys(with_objects) == [STATE, OBJECT_POSES, TCP]
    # The gripper's open/close command stays an absolute target by default; the arm's are offsets.
    assert default_absolute_action_joints(plain.joint_names) == ROBOT.gripper_joints
    assert default_absolute_action_joints(names[:7]) == []
    assert default_absolute_action_joints(panda().command_joints) == panda().gripper_joints
