"""URDF kinematic tree and numpy forward kinematics.

The safety filter needs the pose of every link for every candidate command, at the control
rate, with no simulator in the loop (it also guards a physical arm). This module parses the
URDF once and evaluates the whole tree with small numpy operations.
"""
from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MOVABLE_TYPES = ("revolute", "continuous", "prismatic")


class URDFError(ValueError):
    """The URDF is missing, unreadable, or not a single kinematic tree."""


@dataclass(frozen=True)
class JointSpec:
    """One URDF joint: its frame, axis and limits (SI units)."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray  # (4, 4) parent link frame -> joint frame at q = 0
    axis: np.ndarray  # (3,) unit axis in the joint frame
    lower: float
    upper: float
    velocity: float
    effort: float

    @property
    def movable(self) -> bool:
        return self.type in MOVABLE_TYPES


def _floats(text: str | None, default: tuple[float, ...]) -> np.ndarray:
    if text is None:
        return np.array(default, dtype=float)
    return np.array([float(v) for v in text.split()], dtype=float)


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation matrix of URDF fixed-axis roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    t = 1.0 - c
    return np.array(
        [
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ]
    )


def _parse_joint(element: ET.Element) -> JointSpec:
    name = element.get("name")
    jtype = element.get("type")
    parent = element.find("parent")
    child = element.find("child")
    if not name or jtype is None or parent is None or child is None:
        raise URDFError(f"URDF joint {name!r} lacks a name, type, parent or child")
    origin_el = element.find("origin")
    xyz = _floats(None if origin_el is None else origin_el.get("xyz"), (0.0, 0.0, 0.0))
    rpy = _floats(None if origin_el is None else origin_el.get("rpy"), (0.0, 0.0, 0.0))
    origin = np.eye(4)
    origin[:3, :3] = rpy_matrix(*rpy)
    origin[:3, 3] = xyz
    axis_el = element.find("axis")
    axis = _floats(None if axis_el is None else axis_el.get("xyz"), (1.0, 0.0, 0.0))
    norm = float(np.linalg.norm(axis))
    if norm == 0.0 and jtype in MOVABLE_TYPES:
        raise URDFError(f"URDF joint {name!r} has a zero axis")
    limit = element.find("limit")
    lower, upper, velocity, effort = -math.inf, math.inf, math.inf, math.inf
    if limit is not None:
        lower = float(limit.get("lower", "-inf" if jtype == "continuous" else "0"))
        upper = float(limit.get("upper", "inf" if jtype == "continuous" else "0"))
        velocity = float(limit.get("velocity", "inf"))
        effort = float(limit.get("effort", "inf"))
    if jtype == "continuous":
        lower, upper = -math.inf, math.inf
    return JointSpec(name, jtype, parent.get("link", ""), child.get("link", ""), origin,
                     axis / norm if norm else axis, lower, upper, velocity, effort)


class RobotModel:
    """A URDF's kinematic tree with forward kinematics for every link.

    Configurations are vectors over ``joint_names`` (the model's movable joints, in the order
    given at construction; by default every movable joint in file order). Link poses are in the
    frame of the root link.
    """

    def __init__(self, joints: list[JointSpec], root: str, joint_names: list[str] | None = None):
        self.joints = {j.name: j for j in joints}
        self.root = root
        movable = [j.name for j in joints if j.movable]
        self.joint_names = list(joint_names) if joint_names is not None else movable
        unknown = [n for n in self.joint_names if n not in self.joints or not self.joints[n].movable]
        if unknown:
            raise URDFError(f"joints {unknown} are not movable joints of this URDF; it has {movable}")
        missing = [n for n in movable if n not in self.joint_names]
        if missing:
            raise URDFError(f"joint_names must list every movable joint; missing {missing}")
        by_parent: dict[str, list[JointSpec]] = {}
        for j in joints:
            by_parent.setdefault(j.parent, []).append(j)
        # Topological order: breadth-first from the root, so a parent is always evaluated first.
        self.link_names = [root]
        self._chain: list[tuple[int, int, np.ndarray, np.ndarray, str, int]] = []
        frontier = [root]
        index = {n: i for i, n in enumerate(self.joint_names)}
        while frontier:
            nxt = []
            for link in frontier:
                for j in by_parent.get(link, []):
                    self.link_names.append(j.child)
                    self._chain.append((len(self.link_names) - 1, self.link_names.index(link),
                                        j.origin, j.axis, j.type, index.get(j.name, -1)))
                    nxt.append(j.child)
            frontier = nxt
        self.link_index = {n: i for i, n in enumerate(self.link_names)}
        self.lower = np.array([self.joints[n].lower for n in self.joint_names])
        self.upper = np.array([self.joints[n].upper for n in self.joint_names])
        self.velocity = np.array([self.joints[n].velocity for n in self.joint_names])
        self.effort = np.array([self.joints[n].effort for n in self.joint_names])
        self.prismatic = np.array([self.joints[n].type == "prismatic" for n in self.joint_names])
        # For each link, the indices of the movable joints between it and the root (Jacobians).
        parent_joint = {j.child: j for j in joints}
        self._drivers: dict[str, list[int]] = {}
        for link in self.link_names:
            drivers, node = [], link
            while node in parent_joint:
                spec = parent_joint[node]
                if spec.name in index:
                    drivers.append(index[spec.name])
                node = spec.parent
            self._drivers[link] = drivers

    @classmethod
    def from_urdf(cls, path: str | Path, joint_names: list[str] | None = None) -> "RobotModel":
        """Parse a URDF file. Raises URDFError naming the file on any problem."""
        path = Path(path)
        if not path.is_file():
            raise URDFError(f"URDF file not found: {path}")
        try:
            root_el = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise URDFError(f"URDF {path} is not valid XML: {exc}") from exc
        if root_el.tag != "robot":
            raise URDFError(f"URDF {path}: top element is <{root_el.tag}>, expected <robot>")
        links = [el.get("name") for el in root_el.findall("link")]
        joints = [_parse_joint(el) for el in root_el.findall("joint")]
        children = {j.child for j in joints}
        roots = [n for n in links if n not in children]
        if len(roots) != 1:
            raise URDFError(f"URDF {path} must have exactly one root link, found {roots}")
        model = cls(joints, roots[0], joint_names)
        log.debug("loaded %s: %d links, %d movable joints", path, len(model.link_names),
                  len(model.joint_names))
        return model

    def forward(self, q: np.ndarray) -> np.ndarray:
        """Poses of every link, (L, 4, 4), for configuration q (n_joints,)."""
        frames = np.empty((len(self.link_names), 4, 4))
        frames[0] = np.eye(4)
        motion = np.eye(4)
        for child, parent, origin, axis, jtype, qi in self._chain:
            pose = frames[parent] @ origin
            if qi >= 0:
                if jtype == "prismatic":
                    motion[:3, :3] = np.eye(3)
                    motion[:3, 3] = axis * q[qi]
                else:
                    motion[:3, :3] = axis_angle_matrix(axis, q[qi])
                    motion[:3, 3] = 0.0
                pose = pose @ motion
            frames[child] = pose
        return frames

    def link_positions(self, q: np.ndarray) -> np.ndarray:
        """Origins of every link frame, (L, 3)."""
        return self.forward(q)[:, :3, 3]

    def jacobian(self, q: np.ndarray, link: str, frames: np.ndarray | None = None) -> np.ndarray:
        """Geometric Jacobian of a link origin, (6, n_joints): rows are linear then angular."""
        frames = self.forward(q) if frames is None else frames
        target = frames[self.link_index[link], :3, 3]
        jac = np.zeros((6, len(self.joint_names)))
        for i in self._drivers[link]:
            spec = self.joints[self.joint_names[i]]
            pose = frames[self.link_index[spec.child]]
            axis = pose[:3, :3] @ spec.axis
            if spec.type == "prismatic":
                jac[:3, i] = axis
            else:
                jac[:3, i] = np.cross(axis, target - pose[:3, 3])
                jac[3:, i] = axis
        return jac
