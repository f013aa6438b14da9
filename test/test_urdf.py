"""Every URDF loads in PyBullet and describes a physically sane robot.

The generic checks run over the project's arm and, as a known-good reference,
the Franka Panda shipped with pybullet_data. The lam-arm-only checks pin its
proportions (retargeting and IK assume them) and show that its masses and
effort limits agree: the arm holds a bent pose under gravity.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LAM_URDF = REPO_ROOT / "urdf" / "lam_arm.urdf"
PANDA_URDF = Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"

LAM_ARM_JOINTS = (
    "shoulder_yaw", "shoulder_pitch", "shoulder_roll", "elbow",
    "wrist_roll", "wrist_pitch", "wrist_yaw",
)
LAM_FINGER_JOINTS = ("finger_left", "finger_right")
PANDA_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8)) + (
    "panda_finger_joint1", "panda_finger_joint2",
)
ROBOTS = {
    "lam_arm": (LAM_URDF, LAM_ARM_JOINTS + LAM_FINGER_JOINTS),
    "panda": (PANDA_URDF, PANDA_JOINTS),
}

# Without this flag PyBullet recomputes every inertia from the collision shapes
# (and its cylinder formula is not the solid-cylinder one), ignoring the URDF.
LOAD_FLAGS = p.URDF_USE_INERTIA_FROM_FILE
MOVABLE = (p.JOINT_REVOLUTE, p.JOINT_PRISMATIC)

UPPER_ARM_M = 0.30  # shoulder centre (shoulder_pitch) to elbow
FOREARM_M = 0.27  # elbow to wrist centre (wrist_pitch)
TCP_AT_ZERO_M = (0.0, 0.0, 0.25 + 0.10 + UPPER_ARM_M + FOREARM_M + 0.125)
LENGTH_TOL_M = 0.005
HOME_POSE_RAD = (0.0, 0.5, 0.0, 1.5, 0.0, 1.1, 0.0)
HOLD_TOL_RAD = 0.01
SIM_DT_S = 1.0 / 240.0
HOLD_TIME_S = 2.0
SEED = 20240601


@pytest.fixture
def client():
    """A private PyBullet DIRECT client, always disconnected afterwards."""
    cid = p.connect(p.DIRECT)
    try:
        yield cid
    finally:
        p.disconnect(physicsClientId=cid)


def load(cid: int, path: Path, fixed: bool = True) -> int:
    """Load a URDF with inertias taken from the file; returns the body id."""
    return p.loadURDF(str(path), useFixedBase=fixed, flags=LOAD_FLAGS, physicsClientId=cid)


def joint_infos(cid: int, body: int) -> dict[str, tuple]:
    """Joint name -> p.getJointInfo tuple. A joint's index is also its child link's."""
    infos = (p.getJointInfo(body, j, physicsClientId=cid)
             for j in range(p.getNumJoints(body, physicsClientId=cid)))
    return {info[1].decode(): info for info in infos}


def link_indices(cid: int, body: int) -> dict[str, int]:
    """Link name -> PyBullet link index; the base link is -1."""
    names = {p.getBodyInfo(body, physicsClientId=cid)[0].decode(): -1}
    names.update({info[12].decode(): info[0] for info in joint_infos(cid, body).values()})
    return names


def massive_links(path: Path) -> dict[str, tuple[float, np.ndarray]]:
    """Link name -> (mass, 3x3 inertia about the COM) for every link with mass > 0."""
    out = {}
    for link in ET.parse(path).getroot().iter("link"):
        inertial = link.find("inertial")
        if inertial is None or float(inertial.find("mass").get("value")) <= 0.0:
            continue
        i = {k: float(v) for k, v in inertial.find("inertia").attrib.items()}
        tensor = np.array([
            [i["ixx"], i["ixy"], i["ixz"]],
            [i["ixy"], i["iyy"], i["iyz"]],
            [i["ixz"], i["iyz"], i["izz"]],
        ])
        out[link.get("name")] = (float(inertial.find("mass").get("value")), tensor)
    return out


def set_joints(cid: int, body: int, positions: dict[str, float]) -> None:
    """Teleport the named joints to the given positions (rad or m)."""
    infos = joint_infos(cid, body)
    for name, q in positions.items():
        p.resetJointState(body, infos[name][0], q, physicsClientId=cid)


def frame_position(cid: int, body: int, joint: str) -> np.ndarray:
    """World position of the named joint's frame (its child link's frame)."""
    index = joint_infos(cid, body)[joint][0]
    state = p.getLinkState(body, index, computeForwardKinematics=True, physicsClientId=cid)
    return np.array(state[4])


@pytest.mark.parametrize("robot", ROBOTS)
def test_loads_with_expected_movable_joints(client, robot):
    path, expected = ROBOTS[robot]
    body = load(client, path)
    movable = {name for name, info in joint_infos(client, body).items() if info[2] in MOVABLE}
    assert movable == set(expected), f"{path.name}: movable joints {sorted(movable)}"


@pytest.mark.parametrize("robot", ROBOTS)
def test_movable_joint_limits_are_sane(client, robot):
    path, expected = ROBOTS[robot]
    infos = joint_infos(client, load(client, path))
    for name in expected:
        lower, upper, effort, velocity = infos[name][8:12]
        assert lower < upper, f"{name}: lower {lower} >= upper {upper}"
        assert velocity > 0.0, f"{name}: velocity limit {velocity}"
        assert effort > 0.0, f"{name}: effort limit {effort}"


@pytest.mark.parametrize("robot", ROBOTS)
def test_inertias_are_physical(robot):
    path, _ = ROBOTS[robot]
    links = massive_links(path)
    assert links, f"{path.name} has no link with mass"
    for name, (_, tensor) in links.items():
        a, b, c = np.linalg.eigvalsh(tensor)  # ascending principal moments
        assert a > 0.0, f"{name}: inertia not positive definite, moments {(a, b, c)}"
        # A real body's largest principal moment is at most the sum of the other two.
        assert a + b >= c * (1.0 - 1e-9), f"{name}: triangle inequality fails, {(a, b, c)}"


@pytest.mark.parametrize("robot", ROBOTS)
def test_links_with_mass_have_collision(client, robot):
    path, _ = ROBOTS[robot]
    body = load(client, path)
    indices = link_indices(client, body)
    for name in massive_links(path):
        shapes = p.getCollisionShapeData(body, indices[name], physicsClientId=client)
        assert len(shapes) > 0, f"{path.name}: link {name} has mass but no collision shape"


def random_lam_config(rng: np.random.Generator, cid: int, body: int) -> dict[str, float]:
    """A uniform random configuration inside every movable joint's limits."""
    infos = joint_infos(cid, body)
    return {n: float(rng.uniform(*infos[n][8:10])) for n in LAM_ARM_JOINTS + LAM_FINGER_JOINTS}


@pytest.mark.parametrize("config", ["zero", "random"])
def test_lam_arm_proportions(client, config):
    body = load(client, LAM_URDF)
    if config == "random":
        set_joints(client, body, random_lam_config(np.random.default_rng(SEED), client, body))
    shoulder = frame_position(client, body, "shoulder_pitch")
    elbow = frame_position(client, body, "elbow")
    wrist = frame_position(client, body, "wrist_pitch")
    upper_arm = np.linalg.norm(elbow - shoulder)
    forearm = np.linalg.norm(wrist - elbow)
    assert abs(upper_arm - UPPER_ARM_M) <= LENGTH_TOL_M, f"upper arm {upper_arm:.4f} m"
    assert abs(forearm - FOREARM_M) <= LENGTH_TOL_M, f"forearm {forearm:.4f} m"
    if config == "zero":
        tcp = frame_position(client, body, "tcp_joint")
        np.testing.assert_allclose(tcp, TCP_AT_ZERO_M, atol=1e-3, err_msg="arm not straight up")


def test_lam_elbow_bends_forward(client):
    body = load(client, LAM_URDF)
    set_joints(client, body, {"elbow": 1.0})
    elbow = frame_position(client, body, "elbow")
    wrist = frame_position(client, body, "wrist_pitch")
    # Positive elbow swings the forearm toward +x by sin(1.0) of its length.
    assert wrist[0] - elbow[0] == pytest.approx(FOREARM_M * math.sin(1.0), abs=1e-3)


def test_lam_total_mass(client):
    # PyBullet reports a fixed base's mass as 0, so weigh a free-floating copy.
    body = load(client, LAM_URDF, fixed=False)
    n = p.getNumJoints(body, physicsClientId=client)
    total = sum(p.getDynamicsInfo(body, i, physicsClientId=client)[0] for i in range(-1, n))
    assert 8.0 <= total <= 20.0, f"total mass {total} kg"
    # A link without <inertial> would silently weigh 1 kg in PyBullet.
    from_file = sum(mass for mass, _ in massive_links(LAM_URDF).values())
    assert total == pytest.approx(from_file, abs=1e-6)


@pytest.mark.parametrize("opening, expected_m", [(0.0, 0.0), (0.04, 0.08)])
def test_lam_gripper_opening(client, opening, expected_m):
    body = load(client, LAM_URDF)
    set_joints(client, body, {"finger_left": opening, "finger_right": opening})
    gap = np.linalg.norm(
        frame_position(client, body, "finger_left") - frame_position(client, body, "finger_right"))
    assert gap == pytest.approx(expected_m, abs=1e-3)


def test_lam_holds_home_pose_under_gravity(client):
    body = load(client, LAM_URDF)
    infos = joint_infos(client, body)
    p.setTimeStep(SIM_DT_S, physicsClientId=client)
    p.setGravity(0.0, 0.0, -9.81, physicsClientId=client)
    names = LAM_ARM_JOINTS + LAM_FINGER_JOINTS
    targets = np.array(HOME_POSE_RAD + (0.02, 0.02))
    indices = [infos[n][0] for n in names]
    set_joints(client, body, dict(zip(names, targets)))
    # PyBullet's default gains (position 0.1, velocity 1.0) track within tolerance.
    p.setJointMotorControlArray(
        body, indices, p.POSITION_CONTROL, targetPositions=targets.tolist(),
        forces=[infos[n][10] for n in names], physicsClientId=client)
    worst = np.zeros(len(LAM_ARM_JOINTS))
    for _ in range(round(HOLD_TIME_S / SIM_DT_S)):
        p.stepSimulation(physicsClientId=client)
        states = p.getJointStates(body, indices[:len(LAM_ARM_JOINTS)], physicsClientId=client)
        error = np.abs(np.array([s[0] for s in states]) - targets[:len(LAM_ARM_JOINTS)])
        worst = np.maximum(worst, error)
    for name, err in zip(LAM_ARM_JOINTS, worst):
        assert err <= HOLD_TOL_RAD, f"{name} drifted {err:.4f} rad from its target"


def test_lam_gravity_load_leaves_effort_headroom(client):
    body = load(client, LAM_URDF)
    infos = joint_infos(client, body)
    names = LAM_ARM_JOINTS + LAM_FINGER_JOINTS
    p.setGravity(0.0, 0.0, -9.81, physicsClientId=client)
    # Arm straight out horizontally: the worst static load on shoulder and elbow.
    q = [math.pi / 2 if n == "shoulder_pitch" else 0.0 for n in names]
    zeros = [0.0] * len(names)
    torques = p.calculateInverseDynamics(body, q, zeros, zeros, physicsClientId=client)
    for name, tau in zip(LAM_ARM_JOINTS, torques):
        effort = infos[name][10]
        assert abs(tau) <= 0.5 * effort, f"{name}: gravity needs {tau:.2f} of {effort} N m"
