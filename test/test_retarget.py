"""Retargeting core (no ROS): operator keypoints -> TCP target -> IK, on both robots.

Synthetic operator frames are built by inverting the mapping from real robot configurations:
the rest of the body (and the hand's shape) comes from a real motion-capture frame, the driving
arm is moved so that its grip point, palm frame and elbow map exactly onto the robot's TCP pose
and elbow. Measured on this checkout (seeded, cold solves): round trip 99-100% of reachable
configurations within 5 mm and 98-99% also within 0.02 rad; beyond reach the TCP ends within
0.5 mm of the nearest point of the reach sphere. Warm (teleop) retargeting of real mocap: IK
position error p95 0.2 mm on walk, 0.1 mm on punch; dance_a 0.3 mm on the Panda but 70 mm on
lam_arm (the teleop IK budget has no restarts; only walk carries a threshold).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from lam_capture.mocap import MocapSource
from lam_capture.skeleton import BODY, RIGHT_HAND, Keypoints
from lam_control.robot import RobotConfig, panda
from lam_control.safety import SafetyConfig, SafetyFilter
from lam_policy.gestures import GripperConfig, PinchGripper
from lam_policy.ik import IKConfig
from lam_policy.retarget import PathFollower, RetargetConfig, Retargeter, read_arm

log = logging.getLogger(__name__)

ROBOTS = {  # preset, robot_shoulder_link, robot_elbow_link
    "lam_arm": (RobotConfig, "shoulder_pitch_link", "elbow_link"),
    "panda": (panda, "panda_link2", "panda_link4"),
}
# Landmarks rigidly attached to the operator's right hand (they move with the palm).
RIGHT_HAND_POSE = [BODY.index(n) for n in ("right_wrist", "right_pinky", "right_index", "right_thumb")]
RIGHT_HAND_ALL = RIGHT_HAND_POSE + list(range(RIGHT_HAND, RIGHT_HAND + 21))
SHOULDER, ELBOW, WRIST = (BODY.index(f"right_{j}") for j in ("shoulder", "elbow", "wrist"))
NOSE, LEFT_WRIST = BODY.index("nose"), BODY.index("left_wrist")
THUMB_TIP, INDEX_TIP = RIGHT_HAND + 4, RIGHT_HAND + 8
MARGIN = 0.1  # rad: IK and safety filter keep revolute joints this far inside the URDF limits
# Random targets anywhere in the workspace are cold solves (the seed is far from the answer):
# they get the solver's default settings, with restarts, not the retargeter's warm teleop budget
# (no restarts, 15 iterations), which the mocap tests exercise.
COLD_IK = IKConfig()


@pytest.fixture(scope="module")
def clips():
    return {name: MocapSource(name).all_keypoints() for name in ("walk", "punch", "dance_a")}


@pytest.fixture(scope="module")
def base(clips) -> Keypoints:
    """A real standing operator (walk, frame 0): the body every synthetic frame starts from."""
    return clips["walk"][0]


STATIC = {"joint_speed_scale": 0.0, "path_lag": 0.0}  # the mapping and IK alone, no tracking dynamics


def make_retargeter(robot_name: str, **overrides) -> Retargeter:
    """The mapping and IK with any one target reached at once (no per-frame trust region, no
    path following: those have tests of their own), unless ``overrides`` says otherwise."""
    preset, shoulder, elbow = ROBOTS[robot_name]
    return Retargeter(preset(), RetargetConfig(robot_shoulder_link=shoulder, robot_elbow_link=elbow,
                                               **{**STATIC, **overrides}))


def fk(rt: Retargeter, q: np.ndarray, link: str | None = None) -> np.ndarray:
    """(4, 4) pose of ``link`` (default the TCP) at command-joint configuration q."""
    q_full = np.concatenate([q, np.zeros(len(rt.model.joint_names) - len(q))])
    return rt.model.forward(q_full)[rt.model.link_index[link or rt.robot.ee_link]]


def to_body(rt: Retargeter, base: Keypoints, robot_point: np.ndarray) -> np.ndarray:
    """Inverse of Retargeter.map_point for the base operator's right shoulder (fixed scale)."""
    s = base.points[SHOULDER]
    origin = rt.map_point(s, s)  # where the operator's shoulder lands in the robot frame
    return s + rt.axes.T @ (np.asarray(robot_point) - origin) / rt.scale


def operator_frame(rt: Retargeter, base: Keypoints, tcp: np.ndarray, elbow: np.ndarray | None = None,
                   stamp: float = 0.0) -> Keypoints:
    """The base operator with the right hand rigidly moved so that the grip point and palm frame
    map onto ``tcp`` (4, 4) and the elbow onto ``elbow`` (3,) (default: halfway to the wrist)."""
    kp = Keypoints(base.points.copy(), base.confidence.copy(), stamp)
    ref = read_arm(base, "right", 0.5)
    hand_rot = rt.axes.T @ tcp[:3, :3]  # palm axes in the body frame: map_rotation gives tcp back
    grip = to_body(rt, base, tcp[:3, 3])
    move = hand_rot @ ref.hand_rot.T
    kp.points[RIGHT_HAND_ALL] = grip + (base.points[RIGHT_HAND_ALL] - ref.grip) @ move.T
    kp.points[WRIST] = kp.points[RIGHT_HAND]  # the pose wrist is the hand model's wrist
    kp.points[ELBOW] = to_body(rt, base, elbow) if elbow is not None else \
        0.5 * (kp.points[SHOULDER] + kp.points[WRIST])
    return kp


def random_configs(rt: Retargeter, rng: np.random.Generator):
    """Endless random command-joint configurations inside the IK's margin-shrunk limits."""
    n = len(rt.robot.joint_names)
    lo, hi = rt.model.lower[:n] + MARGIN, rt.model.upper[:n] - MARGIN
    while True:
        q = rt.robot.home_positions()
        q[:n] = rng.uniform(lo, hi)
        yield q


def assert_in_limits(rt: Retargeter, q: np.ndarray) -> None:
    n = len(rt.robot.joint_names)
    lo, hi = rt.model.lower[: len(q)], rt.model.upper[: len(q)]
    assert np.all(np.isfinite(q)), q
    assert np.all(q[:n] >= lo[:n] + MARGIN - 1e-9) and np.all(q[:n] <= hi[:n] - MARGIN + 1e-9), \
        f"arm command outside the margin-shrunk limits: {q[:n]}"
    assert np.all(q[n:] >= lo[n:] - 1e-9) and np.all(q[n:] <= hi[n:] + 1e-9), f"gripper {q[n:]}"


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


def inside(rt: Retargeter, point: np.ndarray) -> bool:
    """The retargeter leaves this robot-frame target as it is (inside its reach and workspace)."""
    return bool(np.allclose(rt.within_reach(point), point, atol=1e-9))


def anchor(rt: Retargeter, base: Keypoints, rng: np.random.Generator) -> np.ndarray:
    """First engagement where the arm already is on the target: the anchoring offset is zero
    (and with anchor_decay=0 stays so), so later targets are the absolute mapping. Returns the
    configuration (the home pose when its TCP is inside the reach sphere, else a random one)."""
    q = rt.robot.home_positions()
    configs = random_configs(rt, rng)
    while not inside(rt, fk(rt, q)[:3, 3]):
        q = next(configs)
    result = rt.update(operator_frame(rt, base, fk(rt, q), fk(rt, q, rt.config.robot_elbow_link)[:3, 3]),
                       q, 0.0)
    assert result is not None
    np.testing.assert_allclose(result.target_position, result.absolute_target, atol=1e-9)
    np.testing.assert_allclose(result.target_position, fk(rt, q)[:3, 3], atol=1e-9)
    return q


# -- round trip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("robot_name", ROBOTS)
def test_round_trip_fk_keypoints_retarget_fk(robot_name, base):
    rt = make_retargeter(robot_name, scale=1.0, calibration_frames=1, anchor_decay=0.0, ik=COLD_IK)
    rng = np.random.default_rng(11)
    home = anchor(rt, base, rng)
    pos_err, rot_err, clamped, t = [], [], 0, 1.0
    for q in random_configs(rt, rng):
        if len(pos_err) == 80 or clamped > 2000:
            break
        tcp, elbow = fk(rt, q), fk(rt, q, rt.config.robot_elbow_link)[:3, 3]
        result = rt.update(operator_frame(rt, base, tcp, elbow, t), home, t)  # cold start from home
        t += 1.0
        if np.linalg.norm(result.target_position - tcp[:3, 3]) > 1e-6:
            clamped += 1  # outside the retargeter's reach sphere / workspace: not a round trip
            continue
        np.testing.assert_allclose(result.absolute_target, tcp[:3, 3], atol=1e-9)
        np.testing.assert_allclose(result.target_rotation, tcp[:3, :3], atol=1e-9)
        assert_in_limits(rt, result.q)
        reached = fk(rt, result.q)
        pos_err.append(np.linalg.norm(reached[:3, 3] - tcp[:3, 3]))
        rot_err.append(rotation_angle(reached[:3, :3], tcp[:3, :3]))
    pos_err, rot_err = np.array(pos_err), np.array(rot_err)
    assert len(pos_err) == 80, f"only {len(pos_err)} reachable configurations ({clamped} clamped)"
    pos_rate = float(np.mean(pos_err < 0.005))
    pose_rate = float(np.mean((pos_err < 0.005) & (rot_err < 0.02)))
    log.info("%s round trip: %.0f%% within 5 mm, %.0f%% within 5 mm and 0.02 rad (%d clamped skipped)",
             robot_name, 100 * pos_rate, 100 * pose_rate, clamped)
    assert pos_rate >= 0.97, f"position round trip {pos_rate:.2%} within 5 mm; errors {np.sort(pos_err)[-5:]}"
    assert pose_rate >= 0.93, f"pose round trip {pose_rate:.2%} within 5 mm + 0.02 rad; " \
                              f"worst rotation errors {np.sort(rot_err)[-5:]} rad"


@pytest.mark.parametrize("robot_name", ROBOTS)
def test_round_trip_position_only(robot_name, base):
    rt = make_retargeter(robot_name, scale=1.0, calibration_frames=1, anchor_decay=0.0, orientation=False,
                         ik=COLD_IK)
    rng = np.random.default_rng(12)
    errors, q_now = [], anchor(rt, base, rng)
    for q in random_configs(rt, rng):
        if len(errors) == 60:
            break
        tcp = fk(rt, q)
        result = rt.update(operator_frame(rt, base, tcp, fk(rt, q, rt.config.robot_elbow_link)[:3, 3]), q_now,
                           1.0 + len(errors))
        if np.linalg.norm(result.target_position - tcp[:3, 3]) > 1e-6:
            continue
        assert result.target_rotation is None
        errors.append(np.linalg.norm(fk(rt, result.q)[:3, 3] - tcp[:3, 3]))
        q_now = result.q  # warm start from wherever the arm went: any jump between targets
    errors = np.array(errors)
    assert np.mean(errors < 0.005) >= 0.97, f"{np.mean(errors < 0.005):.2%}; worst {np.sort(errors)[-5:]}"


# -- unreachable ---------------------------------------------------------------------------------
@pytest.mark.parametrize("robot_name", ROBOTS)
@pytest.mark.parametrize("orientation", [False, True])
def test_unreachable_target_ends_on_the_reach_sphere_within_limits(robot_name, orientation, base):
    """An operator arm twice the robot's (scale 2) reaching out in directions the robot's arm
    can point (above the horizontal): the TCP stops on the reach sphere toward the hand."""
    rt = make_retargeter(robot_name, scale=2.0, calibration_frames=1, anchor_decay=0.0,
                         orientation=orientation, ik=COLD_IK)
    rng = np.random.default_rng(21)
    home = anchor(rt, base, rng)
    hands = random_configs(rt, rng)
    radius = rt.config.reach_margin * rt.robot_reach
    misses, n = [], 0
    while n < 40:
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        if v[2] < 0.1:
            continue
        n += 1
        target = rt.robot_shoulder + v * rng.uniform(1.2, 2.0) * rt.robot_reach
        tcp = fk(rt, next(hands))  # an arbitrary hand orientation
        tcp[:3, 3] = target
        result = rt.update(operator_frame(rt, base, tcp, stamp=float(n)), home, float(n))
        np.testing.assert_allclose(result.absolute_target, target, atol=1e-9)
        assert np.linalg.norm(result.absolute_target - rt.robot_shoulder) > rt.robot_reach, "not beyond reach"
        assert_in_limits(rt, result.q)
        nearest = rt.robot_shoulder + v * radius
        misses.append(np.linalg.norm(fk(rt, result.q)[:3, 3] - nearest))
    misses = np.array(misses)
    log.info("%s unreachable (orientation %s): TCP to nearest sphere point median %.1f mm, max %.1f mm",
             robot_name, orientation, 1e3 * np.median(misses), 1e3 * misses.max())
    assert np.all(misses < 0.02), f"{np.sum(misses >= 0.02)} of {len(misses)} ended over 2 cm from the " \
                                  f"reach sphere; worst {np.sort(misses)[-5:]} m"


# -- real motion capture ------------------------------------------------------------------------
@pytest.mark.parametrize("robot_name", ROBOTS)
@pytest.mark.parametrize("clip", ["walk", "punch", "dance_a"])
def test_mocap_clips_give_finite_in_limit_commands(robot_name, clip, clips):
    rt = make_retargeter(robot_name)  # defaults: calibrated scale, orientation, anchor decay 1 s
    q = rt.robot.home_positions()
    errors = []
    for i, kp in enumerate(clips[clip]):
        result = rt.update(kp, q, kp.stamp)
        if i < rt.config.calibration_frames - 1:
            assert result is None, "commanded before calibration finished"
            continue
        assert result is not None, f"frame {i}: no command from a fully tracked operator"
        assert_in_limits(rt, result.q)
        errors.append(result.position_error)
        q = result.q  # the arm follows: next frame is seeded from this solution
    p95 = float(np.percentile(errors, 95))
    log.info("%s on %s: %d commands, IK position error p95 %.2f mm, scale %.3f", robot_name, clip,
             len(errors), 1e3 * p95, rt.scale)
    if clip == "walk":
        assert p95 < 0.005, f"IK position error p95 {p95 * 1e3:.1f} mm on walk"


# -- tracking dynamics -----------------------------------------------------------------------------
@pytest.mark.parametrize("robot_name", ROBOTS)
def test_lagging_arm_steps_within_the_trust_region_toward_the_operator(robot_name, clips):
    """The default config on a real clip, the arm reaching each command in one frame: every
    command stays within joint_speed_scale x URDF velocity x step_horizon of the arm's joints,
    and the TCP ends each step closer to the target it aimed at than it started."""
    rt = make_retargeter(robot_name, joint_speed_scale=0.5, step_horizon=0.1, path_lag=0.3)
    bound = 0.5 * 0.1 * rt.model.velocity[:len(rt.robot.joint_names)]
    q, commands = rt.robot.home_positions(), 0
    for kp in clips["dance_a"]:  # the fastest clip: up to 9 m/s, far beyond the arm
        result = rt.update(kp, q, kp.stamp)
        if result is None:
            continue
        commands += 1
        assert_in_limits(rt, result.q)
        step = np.abs(result.q - q)[:len(bound)]
        assert np.all(step <= bound + 1e-9), f"step {step} beyond the trust region {bound}"
        before = np.linalg.norm(fk(rt, q)[:3, 3] - result.target_position)
        after = np.linalg.norm(fk(rt, result.q)[:3, 3] - result.target_position)
        assert after <= before + rt.ik.config.position_tolerance, (before, after)
        assert result.reachable, "a target the trust region defers counted as unreachable"
        q = result.q
    assert commands > 50


def test_path_follower_pursues_along_the_path_and_never_goes_back():
    """An L-shaped path 1 m long; an arm at its corner aims 0.1 m further along it, not at the
    newest point (that would cut the corner); progress stays when the arm falls back; a path
    older than ``lag`` is skipped; an arm at the newest point aims there."""
    follower = PathFollower(lag=1.0, lookahead=0.1)
    pts = [np.array([x, 0.0, 0.0]) for x in np.linspace(0.0, 0.5, 6)] + \
          [np.array([0.5, y, 0.0]) for y in np.linspace(0.1, 0.5, 5)]
    for i, point in enumerate(pts):
        follower.add(0.05 * i, point, i)
    aim, payload = follower.aim(np.array([0.5, 0.0, 0.0]), 0.5)
    np.testing.assert_allclose(aim, [0.5, 0.1, 0.0], atol=1e-9)
    assert payload == 6
    aim, _ = follower.aim(np.array([0.0, 0.0, 0.0]), 0.5)  # the arm fell back: progress stays
    np.testing.assert_allclose(aim, [0.5, 0.1, 0.0], atol=1e-9)
    aim, payload = follower.aim(np.array([0.5, 0.45, 0.0]), 0.5)
    np.testing.assert_allclose(aim, pts[-1], atol=1e-9)
    assert payload == len(pts) - 1
    late = PathFollower(lag=0.1, lookahead=0.05)
    for i, point in enumerate(pts):
        late.add(0.05 * i, point, i)
    aim, _ = late.aim(np.array([0.0, 0.0, 0.0]), 0.5)  # path before t = 0.4 s is skipped
    np.testing.assert_allclose(aim, [0.5, 0.35, 0.0], atol=1e-9)


# -- mirror -------------------------------------------------------------------------------------
@pytest.mark.parametrize("robot_name", ROBOTS)
@pytest.mark.parametrize("mirror, sign", [(False, 1.0), (True, -1.0)])
def test_hand_to_the_operators_left_moves_tcp_left_or_mirrored_right(robot_name, mirror, sign, base):
    rt = make_retargeter(robot_name, scale=1.0, calibration_frames=1, anchor_decay=0.0, mirror=mirror)
    step = np.array([0.0, 0.10, 0.0])
    for q0 in random_configs(rt, np.random.default_rng(41)):  # an arm pose with room to move 10 cm
        if all(inside(rt, fk(rt, q0)[:3, 3] + k * step) for k in (-1, 0, 1)):
            break
    first = rt.update(base, q0, 0.0)
    moved = Keypoints(base.points.copy(), base.confidence.copy(), 0.1)
    moved.points[RIGHT_HAND_ALL, 0] += 0.10  # the hand 10 cm to the operator's left (body +x)
    second = rt.update(moved, first.q, 0.1)
    np.testing.assert_allclose(second.target_position - first.target_position, sign * step, atol=1e-9)
    moved_tcp = fk(rt, second.q)[:3, 3] - fk(rt, first.q)[:3, 3]
    assert np.all(np.abs(moved_tcp - sign * step) < 0.005), moved_tcp


# -- gripper ------------------------------------------------------------------------------------
def pinch_frame(base: Keypoints, distance: float, stamp: float) -> Keypoints:
    """The base operator with the right thumb tip ``distance`` m from the index tip."""
    kp = Keypoints(base.points.copy(), base.confidence.copy(), stamp)
    index = kp.points[INDEX_TIP]
    away = base.points[THUMB_TIP] - index
    kp.points[THUMB_TIP] = index + distance * away / np.linalg.norm(away)
    return kp


def noisy_pinch_sweep(rng: np.random.Generator) -> np.ndarray:
    """8 cm -> 1 cm -> 8 cm, dwelling around both thresholds, with +-8 mm noise (under half the
    2 cm hysteresis gap, as a jittery hand tracker gives)."""
    down = np.concatenate([np.linspace(0.08, 0.05, 10), np.full(30, 0.05), np.linspace(0.05, 0.03, 10),
                           np.full(30, 0.03), np.linspace(0.03, 0.01, 10)])
    path = np.concatenate([down, down[::-1]])
    return np.clip(path + rng.uniform(-0.008, 0.008, len(path)), 0.0, None)


def test_pinch_gripper_hysteresis_switches_once_each_way(base):
    distances = noisy_pinch_sweep(np.random.default_rng(31))
    naive = distances < 0.04  # one threshold, no hysteresis: the noise makes it chatter
    assert np.count_nonzero(np.diff(naive.astype(int))) > 4, "the noise does not straddle the thresholds"
    gripper = PinchGripper(GripperConfig())
    states = np.array([gripper.update(pinch_frame(base, d, 0.0), RIGHT_HAND) for d in distances])
    changes = np.flatnonzero(np.diff(states.astype(int)))
    assert len(changes) == 2, f"gripper switched {len(changes)} times: chatter"
    assert states[changes[0] + 1] and not states[changes[1] + 1]  # closed, then opened
    assert distances[changes[0] + 1] < 0.03 and distances[changes[1] + 1] > 0.05


def test_retargeter_gripper_command_follows_the_pinch(base):
    rt = make_retargeter("lam_arm", scale=1.0, calibration_frames=1)
    n = len(rt.robot.joint_names)
    q = rt.robot.home_positions()
    fingers = []
    for i, d in enumerate(noisy_pinch_sweep(np.random.default_rng(32))):
        result = rt.update(pinch_frame(base, d, i / 30), q, i / 30)
        fingers.append(result.q[n:])
        q = result.q
    fingers = np.array(fingers)
    assert set(np.unique(fingers)) == {rt.robot.gripper_closed, rt.robot.gripper_home}
    assert np.count_nonzero(np.any(np.diff(fingers, axis=0) != 0, axis=1)) == 2
    # Both openings lie inside the safety filter's margins: a closing command is not clamped
    # (a clamp is reported as a limit intervention on every tick the gripper stays closed).
    robot = rt.robot
    safety = SafetyFilter(robot.load_model(), len(robot.command_joints), SafetyConfig(), q, robot.ee_link)
    for opening in (robot.gripper_closed, robot.gripper_home):
        command = q.copy()
        command[n:] = opening
        safety.accept_command(command, 0.0)
        assert "position_clamp" not in safety.step(command, 0.0).interventions, opening


def test_robot_config_refuses_a_closed_gripper_outside_its_open_range():
    for bad in (-0.001, float("nan"), 0.035, 0.05):
        with pytest.raises(ValueError, match="gripper_closed"):
            RobotConfig(gripper_closed=bad)


def test_unseen_hand_keeps_the_gripper_state(base):
    gripper = PinchGripper(GripperConfig())
    assert gripper.update(pinch_frame(base, 0.01, 0.0), RIGHT_HAND)
    hidden = pinch_frame(base, 0.09, 0.0)
    hidden.confidence[[THUMB_TIP, INDEX_TIP]] = 0.0
    assert gripper.update(hidden, RIGHT_HAND), "a hand the tracker lost opened the gripper"


# -- deadman ------------------------------------------------------------------------------------
def with_left_hand(kp: Keypoints, raised: bool, stamp: float) -> Keypoints:
    out = Keypoints(kp.points.copy(), kp.confidence.copy(), stamp)
    if raised:  # the other (left) wrist 15 cm above the nose
        out.points[LEFT_WRIST, 1] = out.points[NOSE, 1] + 0.15
    else:
        assert out.points[LEFT_WRIST, 1] < out.points[NOSE, 1]
    return out


def test_gesture_engage_commands_only_while_the_other_hand_is_raised(clips):
    rt = make_retargeter("lam_arm", engage="gesture", scale=1.0, calibration_frames=1)
    walk = clips["walk"]
    raised = [False] * 6 + [True] * 10 + [False] * 6 + [True] * 10 + [False] * 5
    q, commanded = rt.robot.home_positions(), []
    for i, up in enumerate(raised):
        kp = walk[i % len(walk)]
        result = rt.update(with_left_hand(kp, up, kp.stamp + i), q, float(i) / 30)
        commanded.append(result is not None)
        if result is not None:
            q = result.q
    commanded, raised = np.array(commanded), np.array(raised)
    assert not np.any(commanded & ~raised), "commanded while the other hand was down"
    # Engaging needs the hand up for 3 consecutive frames (Deadman.hold_frames).
    assert commanded[8:16].all() and commanded[24:32].all(), commanded.astype(int)


def test_service_engage_commands_only_after_set_engaged(base):
    rt = make_retargeter("lam_arm", engage="service", scale=1.0, calibration_frames=1)
    q = rt.robot.home_positions()
    assert all(rt.update(base, q, t) is None for t in (0.0, 0.1, 0.2))
    rt.set_engaged(True)
    assert all(rt.update(base, q, t) is not None for t in (0.3, 0.4))
    rt.set_engaged(False)
    assert rt.update(base, q, 0.5) is None and not rt.active


@pytest.mark.parametrize("robot_name", ROBOTS)
def test_reengaging_reanchors_without_a_jump(robot_name, base):
    rt = make_retargeter(robot_name, engage="service", scale=1.0, calibration_frames=1, anchor_decay=1.0)
    rt.set_engaged(True)
    q, t = rt.robot.home_positions(), 0.0
    for _ in range(30):  # one second of steady commanding; the arm follows every command
        result = rt.update(base, q, t)
        q, t = result.q, t + 1 / 30
    before = result.absolute_target
    rt.set_engaged(False)
    moved = Keypoints(base.points.copy(), base.confidence.copy(), t)
    moved.points[RIGHT_HAND_ALL] += [0.12, 0.16, 0.0]  # 20 cm up and to the left while disengaged
    for _ in range(10):
        assert rt.update(moved, q, t) is None
        t += 1 / 30
    held_tcp = fk(rt, q)[:3, 3]
    rt.set_engaged(True)
    first = rt.update(moved, q, t)
    assert np.linalg.norm(first.absolute_target - before) > 0.19, "the operator did not move 20 cm"
    jump = np.linalg.norm(fk(rt, first.q)[:3, 3] - held_tcp)
    assert jump < 0.01, f"re-engaging jumped the TCP {jump * 1e3:.1f} mm"
    for _ in range(150):  # 5 s later the offset (1 s time constant) has decayed to the absolute map
        t += 1 / 30
        last = rt.update(moved, first.q, t)
    assert np.linalg.norm(last.target_position - last.absolute_target) < 0.01


@pytest.mark.parametrize("landmark", ["right_shoulder", "right_elbow", "right_wrist"])
def test_lost_driving_arm_holds(landmark, base):
    rt = make_retargeter("lam_arm", scale=1.0, calibration_frames=1)
    q = rt.robot.home_positions()
    assert rt.update(base, q, 0.0) is not None
    lost = Keypoints(base.points.copy(), base.confidence.copy(), 0.1)
    lost.confidence[BODY.index(landmark)] = 0.0
    assert rt.update(lost, q, 0.1) is None  # hold
    anchor = rt._anchor
    other = Keypoints(base.points.copy(), base.confidence.copy(), 0.2)
    other.confidence[BODY.index(landmark.replace("right", "left"))] = 0.0  # the other arm: irrelevant
    assert rt.update(other, q, 0.2) is not None
    assert rt._anchor is anchor  # a short gap keeps the anchor (no orientation re-reference)
    gap = rt.config.reanchor_gap
    assert rt.update(lost, q, 0.3) is None and rt.active
    assert rt.update(lost, q, 0.3 + gap + 0.01) is None and not rt.active  # a long gap ...
    assert rt.update(other, q, 0.4 + gap) is not None and rt._anchor is not anchor  # ... re-anchors


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize("factory, kwargs, field", [
    (RetargetConfig, {"arm": "up"}, "arm"),
    (RetargetConfig, {"arm": None}, "arm"),
    (RetargetConfig, {"scale": -1.0}, "scale"),
    (RetargetConfig, {"reanchor_gap": -0.1}, "reanchor_gap"),
    (RetargetConfig, {"scale": float("nan")}, "scale"),
    (RetargetConfig, {"robot_reach": float("inf")}, "robot_reach"),
    (RetargetConfig, {"anchor_decay": -0.5}, "anchor_decay"),
    (RetargetConfig, {"posture_weight": float("nan")}, "posture_weight"),
    (RetargetConfig, {"reach_margin": 0.0}, "reach_margin"),
    (RetargetConfig, {"reach_margin": 1.5}, "reach_margin"),
    (RetargetConfig, {"calibration_frames": 0}, "calibration_frames"),
    (RetargetConfig, {"min_confidence": 1.5}, "min_confidence"),
    (RetargetConfig, {"engage": "voice"}, "engage"),
    (RetargetConfig, {"joint_speed_scale": -0.5}, "joint_speed_scale"),
    (RetargetConfig, {"step_horizon": float("nan")}, "step_horizon"),
    (RetargetConfig, {"path_lag": -1.0}, "path_lag"),
    (RetargetConfig, {"path_lookahead": float("inf")}, "path_lookahead"),
    (GripperConfig, {"close_below": 0.06}, "close_below"),
    (GripperConfig, {"open_above": float("nan")}, "open_above"),
    (GripperConfig, {"min_confidence": None}, "min_confidence"),
    (IKConfig, {"max_iterations": 0}, "max_iterations"),
])
def test_bad_config_values_name_the_field(factory, kwargs, field):
    with pytest.raises(ValueError, match=field):
        factory(**kwargs)


def test_unknown_robot_link_is_named():
    with pytest.raises(ValueError, match="no_such_link"):
        Retargeter(RobotConfig(), RetargetConfig(robot_elbow_link="no_such_link"))


@pytest.mark.parametrize("state", ["arm_only", "nan", "too_long"])
def test_a_wrong_joint_state_is_refused_with_the_joints_named(state, base):
    rt = make_retargeter("lam_arm", scale=1.0, calibration_frames=1)
    q = rt.robot.home_positions()
    bad = {"arm_only": q[: len(rt.robot.joint_names)], "nan": np.where(np.arange(len(q)) == 3, np.nan, q),
           "too_long": np.concatenate([q, [0.0]])}[state]
    with pytest.raises(ValueError, match="finger_left"):
        rt.update(base, bad, 0.0)
    assert rt.update(base, q, 0.0) is not None  # the retargeter is still usable
