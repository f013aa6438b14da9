"""Which robot: URDF, commanded joints, gripper joints, end-effector link and home pose."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lam_control.kinematics import RobotModel, URDFError
from lam_control.resources import resolve_urdf


@dataclass
class RobotConfig:
    """A robot described by parameters, so any URDF can be driven.

    ``joint_names`` are the arm joints (in command order), ``gripper_joints`` the finger joints
    appended after them; every other movable joint of the URDF is held at zero. Units: radians
    for revolute joints, metres for prismatic ones.
    """

    urdf: str = ""  # '' = urdf/lam_arm.urdf; 'pybullet_data:franka_panda/panda.urdf'; a path
    joint_names: list[str] = field(default_factory=lambda: [
        "shoulder_yaw", "shoulder_pitch", "shoulder_roll", "elbow",
        "wrist_roll", "wrist_pitch", "wrist_yaw"])
    gripper_joints: list[str] = field(default_factory=lambda: ["finger_left", "finger_right"])
    ee_link: str = "tcp_link"
    home: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.0, 1.5, 0.0, 1.1, 0.0])
    gripper_home: float = 0.035  # m per finger: open, clear of the 0.04 limit
    # m per finger: closed, the 0 limit plus the safety filter's 1 mm prismatic margin, so a
    # closing command is not clamped (and counted as a limit intervention) every tick
    gripper_closed: float = 0.001

    def __post_init__(self) -> None:
        for name in ("urdf", "joint_names", "gripper_joints", "ee_link", "home", "gripper_home", "gripper_closed"):
            if getattr(self, name) is None:
                raise ValueError(f"RobotConfig.{name} must not be None")
        self.joint_names = list(self.joint_names)
        self.gripper_joints = list(self.gripper_joints)
        self.home = [float(v) for v in self.home]
        if not self.joint_names:
            raise ValueError("RobotConfig.joint_names must name at least one arm joint")
        every = self.joint_names + self.gripper_joints
        duplicates = sorted({n for n in every if every.count(n) > 1})
        if duplicates:
            raise ValueError(f"RobotConfig joint names repeat: {duplicates}")
        if len(self.home) != len(self.joint_names):
            raise ValueError(f"RobotConfig.home has {len(self.home)} values for "
                             f"{len(self.joint_names)} joint_names")
        if not np.all(np.isfinite(self.home)):
            raise ValueError(f"RobotConfig.home must be finite, got {self.home}")
        if not (np.isfinite(self.gripper_home) and self.gripper_home >= 0):
            raise ValueError(f"RobotConfig.gripper_home must be finite and >= 0 m, got {self.gripper_home}")
        if not (np.isfinite(self.gripper_closed) and 0 <= self.gripper_closed < self.gripper_home):
            raise ValueError(f"RobotConfig.gripper_closed must be finite, >= 0 m and below gripper_home "
                             f"({self.gripper_home}), got {self.gripper_closed}")
        if not self.ee_link:
            raise ValueError("RobotConfig.ee_link must name the end-effector (TCP) link")

    @property
    def command_joints(self) -> list[str]:
        """Every joint a command may name: the arm joints, then the gripper joints."""
        return self.joint_names + self.gripper_joints

    def urdf_path(self) -> Path:
        return resolve_urdf(self.urdf)

    def home_positions(self) -> np.ndarray:
        """Home configuration over command_joints."""
        return np.array(self.home + [self.gripper_home] * len(self.gripper_joints))

    def load_model(self) -> RobotModel:
        """Kinematic model whose configuration vector starts with command_joints.

        Raises ValueError when a configured joint or link is not in the URDF.
        """
        path = self.urdf_path()
        full = RobotModel.from_urdf(path)
        missing = [n for n in self.command_joints if n not in full.joint_names]
        if missing:
            raise URDFError(f"{path.name} has no movable joints {missing}; "
                            f"its movable joints are {full.joint_names}")
        if self.ee_link not in full.link_index:
            raise URDFError(f"{path.name} has no link {self.ee_link!r} (ee_link)")
        rest = [n for n in full.joint_names if n not in self.command_joints]
        return RobotModel.from_urdf(path, self.command_joints + rest)


def panda() -> RobotConfig:
    """pybullet_data's Franka Panda, to show the stack is not tied to its own arm."""
    return RobotConfig(
        urdf="pybullet_data:franka_panda/panda.urdf",
        joint_names=[f"panda_joint{i}" for i in range(1, 8)],
        gripper_joints=["panda_finger_joint1", "panda_finger_joint2"],
        ee_link="panda_grasptarget",
        home=[0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8],
        gripper_home=0.035,
    )


PRESETS = {"lam_arm": RobotConfig, "panda": panda}
