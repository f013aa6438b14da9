"""IK: FK -> IK -> FK round trips, warm-started tracking, null-space posture, unreachable targets.

Run on the project's 7-DoF arm and pybullet_data's Franka Panda. The reference kinematics is
``RobotModel`` (itself pinned to PyBullet by test_kinematics); the unreachable-target reference is
an independent bounded optimiser (scipy L-BFGS-B, multi-start) over the same limits.
"""
from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.optimize import minimize

from lam_control.robot import RobotConfig, panda
from lam_policy.ik import IKConfig, IKSolver, PostureTarget, bench_ik, rotation_error

log = logging.getLogger(__name__)

SEED = 20240612
ROBOTS = {"lam_arm": RobotConfig, "panda": panda}
ELBOW = {"lam_arm": "elbow_link", "panda": "panda_link4"}
SHOULDER = {"lam_arm": "shoulder_pitch_link", "panda": "panda_link2"}  # centre of the reach sphere
N_ROUND_TRIPS = 50
MAX_FAILURES = 2  # of 50: >= 95 % must succeed
SEED_PERTURBATION = 0.3  # rad, each joint
POSITION_TOL_M = 1e-3
ORIENTATION_TOL_RAD = 0.01
MAX_FRAME_STEP_RAD = 0.2  # per 30 Hz frame: no branch flips
ELBOW_SEPARATION_M = 0.05
UNREACHABLE_SLACK_M = 0.02


@pytest.fixture(scope="module", params=sorted(ROBOTS))
def arm(request):
    robot = ROBOTS[request.param]()
    model = robot.load_model()
    home = np.zeros(len(model.joint_names))
    home[:len(robot.command_joints)] = robot.home_positions()
    return SimpleNamespace(name=request.param, robot=robot, model=model, home=home,
                           solver=IKSolver(model, robot.joint_names, robot.ee_link),
                           ee=model.link_index[robot.ee_link])


def tcp(arm, q):
    """TCP position (3,) and rotation (3, 3) by the reference FK."""
    pose = arm.model.forward(q)[arm.ee]
    return pose[:3, 3], pose[:3, :3]


def pose_errors(arm, q, position, rotation):
    got_p, got_r = tcp(arm, q)
    return float(np.linalg.norm(got_p - position)), float(np.linalg.norm(rotation_error(rotation, got_r)))


def assert_valid(arm, result, seed):
    """Finite, arm joints within the margin-shrunk limits, other joints left at the seed."""
    q, solver = result.q, arm.solver
    assert q.shape == seed.shape and np.all(np.isfinite(q))
    arm_q = q[solver.arm_index]
    assert np.all(arm_q >= solver.lower - 1e-12) and np.all(arm_q <= solver.upper + 1e-12), arm_q
    others = np.setdiff1d(np.arange(len(q)), solver.arm_index)
    np.testing.assert_array_equal(q[others], seed[others])


def random_configs(arm, rng, n):
    qs = np.repeat(arm.home[None], n, axis=0)
    qs[:, arm.solver.arm_index] = rng.uniform(arm.solver.lower, arm.solver.upper, (n, len(arm.solver.lower)))
    return qs


@pytest.mark.parametrize("start", ["perturbed", "home"])
def test_round_trip(arm, start):
    rng = np.random.default_rng(SEED)
    failures = 0
    for q_true in random_configs(arm, rng, N_ROUND_TRIPS):
        position, rotation = tcp(arm, q_true)
        seed = arm.home.copy()
        if start == "perturbed":
            seed[arm.solver.arm_index] = q_true[arm.solver.arm_index] \
                + rng.uniform(-SEED_PERTURBATION, SEED_PERTURBATION, len(arm.solver.arm_index))
        result = arm.solver.solve(position, rotation, seed)
        assert_valid(arm, result, seed)
        pos_err, rot_err = pose_errors(arm, result.q, position, rotation)
        if result.converged:  # the solver's own report agrees with the reference FK
            assert pos_err <= arm.solver.config.position_tolerance + 1e-9
            assert rot_err <= arm.solver.config.orientation_tolerance + 1e-9
        failures += not (pos_err <= POSITION_TOL_M and rot_err <= ORIENTATION_TOL_RAD)
    log.info("%s round trip from %s: %d of %d failed", arm.name, start, failures, N_ROUND_TRIPS)
    assert failures <= MAX_FAILURES, f"{arm.name} from {start}: {failures}/{N_ROUND_TRIPS} round trips failed"


def test_warm_tracking_follows_a_circle_without_flips(arm):
    """A 10 cm diameter circle at 30 Hz (5 s per turn) with the tool yawing +-0.3 rad."""
    centre, home_rot = tcp(arm, arm.home)
    q, frames = arm.home.copy(), 150
    for k in range(frames + 1):
        angle = 2 * math.pi * k / frames
        position = centre + 0.05 * np.array([math.cos(angle) - 1.0, math.sin(angle), 0.0])
        yaw = 0.3 * math.sin(angle)
        rotation = home_rot @ np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0],
                                        [0, 0, 1]])
        result = arm.solver.solve(position, rotation, q)
        assert_valid(arm, result, q)
        pos_err, rot_err = pose_errors(arm, result.q, position, rotation)
        assert result.converged, (k, result)
        assert pos_err <= POSITION_TOL_M and rot_err <= ORIENTATION_TOL_RAD, (k, pos_err, rot_err)
        assert np.max(np.abs(result.q - q)) < MAX_FRAME_STEP_RAD, (k, result.q - q)
        q = result.q


def test_posture_moves_the_elbow_not_the_tcp(arm):
    """Two elbow targets either side of the arm's plane, same TCP pose: the TCP stays put, the
    elbows part and each lies nearer its own target."""
    position, rotation = tcp(arm, arm.home)
    elbow = arm.model.link_index[ELBOW[arm.name]]
    home_elbow = arm.model.forward(arm.home)[elbow, :3, 3]
    targets = [home_elbow + [0.0, side * 0.3, 0.0] for side in (1.0, -1.0)]
    elbows = []
    for target in targets:
        result = arm.solver.solve(position, rotation, arm.home, PostureTarget(ELBOW[arm.name], target))
        assert_valid(arm, result, arm.home)
        pos_err, rot_err = pose_errors(arm, result.q, position, rotation)
        assert result.converged and pos_err <= POSITION_TOL_M and rot_err <= ORIENTATION_TOL_RAD
        elbows.append(arm.model.forward(result.q)[elbow, :3, 3])
    assert np.linalg.norm(elbows[0] - elbows[1]) > ELBOW_SEPARATION_M, elbows
    for own, other, target in ((0, 1, targets[0]), (1, 0, targets[1])):
        assert np.linalg.norm(elbows[own] - target) < np.linalg.norm(elbows[other] - target)


def test_warm_solves_never_restart(arm):
    """The TCP held where it is but turned 2.5 rad about its y axis: beyond the wrist from this
    branch (for the Panda another branch has it). A warm solve returns its own branch's best
    compromise, identical to a solver without restarts, with the position still reached."""
    position, rotation = tcp(arm, arm.home)
    target_rot = rotation @ np.array([[math.cos(2.5), 0, math.sin(2.5)], [0, 1.0, 0],
                                      [-math.sin(2.5), 0, math.cos(2.5)]])
    result = arm.solver.solve(position, target_rot, arm.home)
    no_restarts = IKSolver(arm.model, arm.robot.joint_names, arm.robot.ee_link, IKConfig(restarts=0))
    np.testing.assert_array_equal(result.q, no_restarts.solve(position, target_rot, arm.home).q)
    assert not result.converged and result.reachable
    assert pose_errors(arm, result.q, position, target_rot)[0] <= POSITION_TOL_M
    always_cold = IKSolver(arm.model, arm.robot.joint_names, arm.robot.ee_link, IKConfig(cold_error=0.0))
    assert always_cold.solve(position, target_rot, arm.home).converged == (arm.name == "panda")


def test_rest_pull_keeps_solutions_nearer_home(arm):
    """Position-only targets leave four redundant DoF; a rest pull toward home uses them."""
    rested = IKSolver(arm.model, arm.robot.joint_names, arm.robot.ee_link, rest=arm.robot.home)
    rng = np.random.default_rng(SEED + 1)
    nearer, home_arm = 0, arm.home[arm.solver.arm_index]
    for q_true in random_configs(arm, rng, 20):
        position, _ = tcp(arm, q_true)
        seed = q_true.copy()
        seed[arm.solver.arm_index] += rng.uniform(-0.5, 0.5, len(home_arm))
        plain, pulled = arm.solver.solve(position, None, seed), rested.solve(position, None, seed)
        assert plain.converged and pulled.converged
        assert pose_errors(arm, pulled.q, position, np.eye(3))[0] <= POSITION_TOL_M
        nearer += np.linalg.norm(pulled.q[arm.solver.arm_index] - home_arm) \
            < np.linalg.norm(plain.q[arm.solver.arm_index] - home_arm)
    assert nearer >= 16, f"rest pull nearer home in only {nearer}/20 solves"


def closest_reachable_point(arm, target, starts=8):
    """Reference: the TCP position (3,) nearest ``target`` over the margin-shrunk limits, by
    multi-start L-BFGS-B."""
    solver, rng = arm.solver, np.random.default_rng(SEED + 2)

    def cost(x):
        q = arm.home.copy()
        q[solver.arm_index] = x
        frames = arm.model.forward(q)
        error = frames[arm.ee, :3, 3] - target
        jac = arm.model.jacobian(q, arm.robot.ee_link, frames)[:3, solver.arm_index]
        return 0.5 * float(error @ error), jac.T @ error

    best, starts = None, rng.uniform(solver.lower, solver.upper, (starts, len(solver.lower)))
    for x0 in [arm.home[solver.arm_index], *starts]:
        fit = minimize(cost, x0, jac=True, method="L-BFGS-B", bounds=list(zip(solver.lower, solver.upper)))
        best = fit if best is None or fit.fun < best.fun else best
    q = arm.home.copy()
    q[solver.arm_index] = best.x
    return tcp(arm, q)[0]


@pytest.mark.parametrize("with_rotation", [False, True])
def test_unreachable_target_gives_the_closest_reach(arm, with_rotation):
    shoulder = arm.model.forward(arm.home)[arm.model.link_index[SHOULDER[arm.name]], :3, 3]
    direction = np.array([1.0, 0.5, 0.3]) / np.linalg.norm([1.0, 0.5, 0.3])
    target = shoulder + 2.0 * direction
    home_position, home_rot = tcp(arm, arm.home)
    result = arm.solver.solve(target, home_rot if with_rotation else None, arm.home)
    assert_valid(arm, result, arm.home)
    assert not result.reachable and not result.converged
    reached, _ = tcp(arm, result.q)
    distance = np.linalg.norm(reached - target)
    assert distance == pytest.approx(result.position_error, abs=1e-9)
    assert distance < np.linalg.norm(home_position - target)
    nearest = closest_reachable_point(arm, target)
    assert distance <= np.linalg.norm(nearest - target) + UNREACHABLE_SLACK_M
    assert np.linalg.norm(reached - nearest) < UNREACHABLE_SLACK_M, (reached, nearest)
    if arm.name == "lam_arm":  # its links line up: a straight 0.695 m reach from the shoulder-pitch centre
        np.testing.assert_allclose(nearest, shoulder + 0.695 * direction, atol=1e-3)


def test_solves_are_deterministic(arm):
    rng = np.random.default_rng(SEED + 3)
    q_true = random_configs(arm, rng, 1)[0]
    position, rotation = tcp(arm, q_true)
    for target in (position, position + [3.0, 0.0, 0.0]):
        first, second = (arm.solver.solve(target, rotation, arm.home) for _ in range(2))
        np.testing.assert_array_equal(first.q, second.q)
        assert first.iterations == second.iterations


def test_seed_outside_the_margins_is_brought_inside(arm):
    seed = arm.home.copy()
    seed[arm.solver.arm_index] = arm.model.lower[arm.solver.arm_index]  # on the URDF limits
    position, rotation = tcp(arm, arm.home)
    result = arm.solver.solve(position, rotation, seed)
    assert_valid(arm, result, seed)


def test_fast_chain_matches_the_reference_kinematics(arm):
    """The solver's precomputed chains equal RobotModel's FK and Jacobian, including a prismatic
    solved joint and a frozen joint on the path."""
    rng = np.random.default_rng(SEED + 4)
    finger = arm.robot.gripper_joints[0]
    finger_link = arm.model.joints[finger].child
    cases = [(arm.robot.joint_names, arm.robot.ee_link), (arm.robot.joint_names, ELBOW[arm.name]),
             (arm.robot.joint_names + [finger], finger_link), (arm.robot.joint_names, finger_link)]
    for names, link in cases:
        solver = IKSolver(arm.model, names, arm.robot.ee_link, IKConfig(limit_margin=0.0))
        columns = [arm.model.joint_names.index(n) for n in names]
        for _ in range(3):
            q = rng.uniform(arm.model.lower, arm.model.upper)
            frames = arm.model.forward(q)
            pose, jac = solver._chain(link, q).evaluate(q[solver.arm_index], True)
            np.testing.assert_allclose(pose, frames[arm.model.link_index[link]], atol=1e-12)
            np.testing.assert_allclose(jac, arm.model.jacobian(q, link, frames)[:, columns], atol=1e-12)


def test_bench_ik_reports_percentiles():
    stats = bench_ik(RobotConfig(), 10)
    assert set(stats) == {"p50_ms", "p95_ms"} and 0 < stats["p50_ms"] <= stats["p95_ms"]


def test_rotation_error_near_pi_and_zero():
    for axis in (np.array([1.0, 0, 0]), np.array([0, 0.6, 0.8]), np.array([-0.48, 0.6, 0.64])):
        for angle in (0.0, 1e-8, 1.0, math.pi - 1e-9, math.pi):
            k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            r = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
            got = rotation_error(r, np.eye(3))
            assert np.linalg.norm(got) == pytest.approx(angle, abs=1e-7)
            if angle > 1e-3:  # the axis up to sign at pi, where both signs are the same rotation
                assert abs(abs(got @ axis) - angle) < 1e-6


@pytest.mark.parametrize("field, value", [
    ("max_iterations", 0), ("max_iterations", 2.5), ("max_iterations", None), ("restarts", -1),
    ("position_tolerance", 0.0), ("orientation_tolerance", -1e-3), ("orientation_weight", math.nan),
    ("damping", -0.1), ("singular_threshold", 0.0), ("limit_margin", -0.1), ("max_step", math.inf),
    ("null_space_gain", 1.5), ("rest_gain", -0.1), ("cold_error", -1.0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        IKConfig(**{field: value})


@pytest.mark.parametrize("field, kwargs", [
    ("position", dict(link="elbow_link", position=[0.0, 0.0])),
    ("position", dict(link="elbow_link", position=[0.0, math.nan, 0.0])),
    ("weight", dict(link="elbow_link", position=[0.0, 0.0, 0.0], weight=2.0)),
    ("link", dict(link=None, position=[0.0, 0.0, 0.0]))])
def test_posture_target_rejects_bad_values(field, kwargs):
    with pytest.raises(ValueError, match=field):
        PostureTarget(**kwargs)


def test_trust_region_bounds_each_joint_and_gets_closer(arm):
    """``max_change`` keeps every arm joint within it of the seed, the TCP ends closer to a far
    target than the seed is (the joints that can move take over), ``bounded`` says the trust
    region stopped it; a trust region the solution fits in changes nothing."""
    rng = np.random.default_rng(SEED)
    bound = 0.05 * arm.model.velocity[arm.solver.arm_index]  # rad: 0.1 s at half the URDF speed
    for q_true in random_configs(arm, rng, 20):
        position, rotation = tcp(arm, q_true)
        result = arm.solver.solve(position, rotation, arm.home, max_change=bound)
        assert_valid(arm, result, arm.home)
        step = np.abs(result.q - arm.home)[arm.solver.arm_index]
        assert np.all(step <= bound + 1e-9), step
        start = np.linalg.norm(tcp(arm, arm.home)[0] - position)
        assert result.position_error < start, (result.position_error, start)
        assert result.bounded or result.reachable
    position, rotation = tcp(arm, arm.home)
    target = position + np.array([0.0, 0.01, 0.0])
    free, roomy = (arm.solver.solve(target, rotation, arm.home, max_change=m) for m in (None, 10.0))
    np.testing.assert_array_equal(free.q, roomy.q)
    assert not roomy.bounded
    with pytest.raises(ValueError, match="max_change"):
        arm.solver.solve(target, rotation, arm.home, max_change=-0.1)


def test_solver_rejects_bad_setup_and_inputs():
    robot = RobotConfig()
    model = robot.load_model()
    with pytest.raises(ValueError, match="arm_joints"):
        IKSolver(model, ["no_such_joint"], robot.ee_link)
    with pytest.raises(ValueError, match="ee_link"):
        IKSolver(model, robot.joint_names, "no_such_link")
    with pytest.raises(ValueError, match="limit_margin"):
        IKSolver(model, robot.joint_names, robot.ee_link, IKConfig(limit_margin=2.0))
    with pytest.raises(ValueError, match="rest"):
        IKSolver(model, robot.joint_names, robot.ee_link, rest=[0.0, 1.0])
    with pytest.raises(ValueError, match="moves ee_link"):
        IKSolver(model, ["finger_left"], robot.ee_link)
    solver, seed = IKSolver(model, robot.joint_names, robot.ee_link), np.zeros(len(model.joint_names))
    for target, rotation, q, match in (([0.3, 0.0], None, seed, "target_pos"),
                                       ([0.3, 0.0, math.nan], None, seed, "target_pos"),
                                       ([0.3, 0.0, 0.5], np.eye(2), seed, "target_rot"),
                                       ([0.3, 0.0, 0.5], 2 * np.eye(3), seed, "target_rot"),
                                       ([0.3, 0.0, 0.5], -np.eye(3), seed, "target_rot"),
                                       ([0.3, 0.0, 0.5], None, seed[:7], "seed")):
        with pytest.raises(ValueError, match=match):
            solver.solve(target, rotation, q)
    with pytest.raises(ValueError, match="PostureTarget.link"):
        solver.solve([0.3, 0.0, 0.5], None, seed, PostureTarget("no_such_link", [0.0, 0.0, 0.0]))
