"""The arm in PyBullet: a table scene, position control within URDF limits, physics at 240 Hz."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from lam_control.pybullet_quiet import import_pybullet

p = import_pybullet()
import pybullet_data

from lam_control.arm import Arm, ArmState
from lam_control.robot import RobotConfig
from lam_control.safety import SafetyConfig

log = logging.getLogger(__name__)

TABLE_TOP_Z = 0.0  # the robot base stands on the table top, the world origin


@dataclass
class SimConfig:
    """PyBullet settings. Units: s, Hz."""

    gui: bool = False
    physics_rate: float = 240.0  # Hz
    position_gain: float = 0.3
    velocity_gain: float = 1.0
    max_catch_up: float = 0.1  # s of physics run at most per tick when the caller falls behind

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"SimConfig.{name} must not be None")
        for name in ("physics_rate", "position_gain", "velocity_gain", "max_catch_up"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"SimConfig.{name} must be finite and > 0, got {value!r}")


class SimArm(Arm):
    """PyBullet backend. ``tick(now)`` runs physics up to ``now`` (seconds on any clock)."""

    def __init__(self, robot: RobotConfig | None = None, safety: SafetyConfig | None = None,
                 sim: SimConfig | None = None):
        robot = robot or RobotConfig()
        super().__init__(robot, safety or SafetyConfig())
        self.sim = sim or SimConfig()
        self.client = p.connect(p.GUI if self.sim.gui else p.DIRECT)
        try:
            self._build_scene()
        except Exception:
            p.disconnect(self.client)
            raise
        self.time = 0.0  # simulated seconds
        self._clock_offset: float | None = None

    def _build_scene(self) -> None:
        c = self.client
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.setTimeStep(1.0 / self.sim.physics_rate, physicsClientId=c)
        p.loadURDF("plane.urdf", [0, 0, -0.75], physicsClientId=c)
        half = [0.6, 0.8, 0.025]
        shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=c)
        look = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=[0.55, 0.42, 0.3, 1],
                                   physicsClientId=c)
        self.table = p.createMultiBody(0, shape, look, [0.3, 0, TABLE_TOP_Z - half[2]], physicsClientId=c)
        self.body = p.loadURDF(str(self.robot.urdf_path()), [0, 0, TABLE_TOP_Z], useFixedBase=True,
                               flags=p.URDF_USE_INERTIA_FROM_FILE, physicsClientId=c)
        index = {}
        self.link_ids = {p.getBodyInfo(self.body, physicsClientId=c)[0].decode(): -1}
        for j in range(p.getNumJoints(self.body, physicsClientId=c)):
            info = p.getJointInfo(self.body, j, physicsClientId=c)
            index[info[1].decode()] = j
            self.link_ids[info[12].decode()] = j
        self.joint_ids = [index[n] for n in self.joint_names]
        others = [n for n in self.model.joint_names if n not in self.joint_names]
        self._other_ids = [index[n] for n in others]
        self._forces = list(self.model.effort[: len(self.joint_names)])
        self._max_vel = list(self.model.velocity[: len(self.joint_names)])
        self.reset_positions(self.robot.home_positions())

    def reset_positions(self, positions: np.ndarray) -> None:
        """Teleport the arm (scene setup only; never used to move it during control)."""
        for jid, q in zip(self.joint_ids, positions):
            p.resetJointState(self.body, jid, float(q), 0.0, physicsClientId=self.client)
        for jid in self._other_ids:
            p.resetJointState(self.body, jid, 0.0, 0.0, physicsClientId=self.client)
        self._apply(np.asarray(positions, dtype=float), np.zeros(len(positions)))
        self.filter = None  # re-initialised from the new state on the next tick

    def read_state(self) -> ArmState:
        states = p.getJointStates(self.body, self.joint_ids, physicsClientId=self.client)
        return ArmState(np.array([s[0] for s in states]), np.array([s[1] for s in states]), self.time)

    def link_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """World pose (position, xyzw quaternion) of every link frame."""
        poses = {}
        for name, lid in self.link_ids.items():
            if lid < 0:  # PyBullet reports the base's centre of mass: undo the inertial offset
                com_pos, com_orn = p.getBasePositionAndOrientation(self.body, physicsClientId=self.client)
                local = p.getDynamicsInfo(self.body, -1, physicsClientId=self.client)[3:5]
                inv_pos, inv_orn = p.invertTransform(*local)
                pos, orn = p.multiplyTransforms(com_pos, com_orn, inv_pos, inv_orn)
            else:
                st = p.getLinkState(self.body, lid, computeForwardKinematics=True,
                                    physicsClientId=self.client)
                pos, orn = st[4], st[5]
            poses[name] = (np.array(pos), np.array(orn))
        return poses

    def tcp_position(self) -> np.ndarray:
        return self.link_poses()[self.robot.ee_link][0]

    def _apply(self, positions: np.ndarray, velocities: np.ndarray) -> None:
        n = len(self.joint_ids)
        p.setJointMotorControlArray(
            self.body, self.joint_ids, p.POSITION_CONTROL,
            targetPositions=list(positions), targetVelocities=list(velocities),
            forces=self._forces, positionGains=[self.sim.position_gain] * n,
            velocityGains=[self.sim.velocity_gain] * n, physicsClientId=self.client)
        if self._other_ids:
            p.setJointMotorControlArray(self.body, self._other_ids, p.POSITION_CONTROL,
                                        targetPositions=[0.0] * len(self._other_ids),
                                        physicsClientId=self.client)

    def _write(self, positions: np.ndarray, velocities: np.ndarray, now: float) -> None:
        self._apply(positions, velocities)
        self.advance(now)

    def advance(self, now: float) -> int:
        """Run physics steps until simulated time reaches ``now``; returns the steps taken."""
        if self._clock_offset is None:
            self._clock_offset = now - self.time
        target = now - self._clock_offset
        dt = 1.0 / self.sim.physics_rate
        if target - self.time > self.sim.max_catch_up:
            log.warning("simulation fell %.3f s behind; skipping ahead", target - self.time)
            self.time = target - self.sim.max_catch_up
        steps = 0
        while self.time + dt <= target + 1e-9:
            p.stepSimulation(physicsClientId=self.client)
            self.time += dt
            steps += 1
        return steps

    def render(self, width: int = 640, height: int = 480, distance: float = 1.25,
               yaw: float = 60.0, pitch: float = -22.0, target=(0.25, 0.0, 0.3)) -> np.ndarray:
        """An RGB image (H, W, 3) uint8 from an orbit camera (software renderer in DIRECT)."""
        view = p.computeViewMatrixFromYawPitchRoll(target, distance, yaw, pitch, 0, 2,
                                                   physicsClientId=self.client)
        proj = p.computeProjectionMatrixFOV(50, width / height, 0.05, 10, physicsClientId=self.client)
        _, _, rgba, _, _ = p.getCameraImage(width, height, view, proj, renderer=p.ER_TINY_RENDERER,
                                            physicsClientId=self.client)
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = None
