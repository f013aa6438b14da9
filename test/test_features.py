"""The derived observation.tcp feature: forward kinematics against PyBullet's own TCP, object
offsets, the dataset path and the default observation keys of `lam train`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lam_control.robot import RobotConfig, panda
from lam_control.sim_arm import SimArm
from lam_control.tasks import make_task
from lam_policy.features import StateNoise, TcpFeature, add_tcp_feature
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


def test_state_noise_shifts_whole_windows_and_keeps_the_tcp_feature_consistent():
    names = ROBOT.command_joints
    n_arm = len(ROBOT.joint_names)
    feature = TcpFeature(ROBOT, names)
    rng = np.random.default_rng(1)
    b, h = 400, 2
    state = np.tile(ROBOT.home_positions(), (b, h, 1)) + rng.normal(0, 0.1, (b, h, len(names)))
    state[:, :, n_arm:] = 0.02  # fingers
    objects = rng.uniform(0.2, 0.4, (b, h, 3))
    tcp = np.array([[feature.compute(state[i, k], np.r_[objects[i, k], 0, 0, 0, 1]) for k in range(h)]
                    for i in range(b)])
    batch = {STATE: torch.as_tensor(state, dtype=torch.float32), TCP: torch.as_tensor(tcp, dtype=torch.float32),
             ACTION: torch.zeros(b, 4, len(names))}
    before = {k: v.clone() for k, v in batch.items()}
    noise = StateNoise(names, ROBOT.joint_names, std=0.02, fraction=0.5, tcp=feature)
    torch.manual_seed(0)
    out = noise(batch)
    for key, value in before.items():  # the input is left as it was
        assert torch.equal(batch[key], value)
    assert torch.equal(out[ACTION], batch[ACTION])  # targets stay the demonstrator's
    shift = (out[STATE] - batch[STATE]).double().numpy()
    moved = np.abs(shift).max(axis=(1, 2)) > 1e-6
    assert 0.4 < moved.mean() < 0.6  # about the fraction of the windows
    np.testing.assert_allclose(shift[:, 1], shift[:, 0], atol=1e-6)  # one offset for the whole history
    assert np.abs(shift[:, :, n_arm:]).max() < 1e-6  # the gripper is left alone
    assert 0.015 < shift[moved, 0, :n_arm].std() < 0.025
    for i in np.flatnonzero(moved)[:20]:
        for k in range(h):
            q = out[STATE][i, k].double().numpy()
            np.testing.assert_allclose(out[TCP][i, k, :3].numpy(), feature.tcp(q), atol=1e-5)
            # the object did not move: its offset from the shifted TCP points at the same place
            np.testing.assert_allclose(out[TCP][i, k, 3:].numpy() + feature.tcp(q), objects[i, k], atol=1e-5)
    assert torch.equal(out[TCP][~torch.as_tensor(moved)], batch[TCP][~torch.as_tensor(moved)])
    torch.manual_seed(0)
    assert torch.equal(noise(batch)[STATE], out[STATE])  # the draws follow torch's seed


def test_state_noise_refuses_joints_the_state_does_not_have():
    with pytest.raises(ValueError, match="not among the state"):
        StateNoise(ROBOT.command_joints, ["wrist_3"], std=0.02, fraction=0.5)
