"""Tabletop tasks on the simulated arm: reach a marker, push a cube to a goal, pick a cube into a bin.

Each task owns its props in the arm's PyBullet client, re-places them from a seed (a numpy
Generator, so the same seed gives the same scene), tests success, and has a time limit. Poses are
in the robot base frame, which is the world frame of ``SimArm`` (table top at z = 0, x forward,
y left). Random ranges stay where the project arm reaches comfortably with the gripper pointing
down AND where teleoperation reaches: with policy_node's default retargeting (neutral offset
0.35 m up, scale = robot reach / operator reach) the table is at a standing operator's full
stretch, so at table height a person reaches only x 0.18-0.38 m, |y| <= 0.16 m (measured by
inverting the mapping for a 0.30 + 0.26 m arm). Things touched on the table (cube, push goal)
stay inside that with margin; things reached from above (bin, reach marker) range wider.

The cube is sized for the gripper and for teleoperation: retargeting keeps TCP targets >= 0.05 m
above the table (RetargetConfig.workspace_min), where the fingertips are at 0.045 m, so a 5.5 cm
cube still gives 1 cm of finger contact, and it fits the 7 cm open stroke (0.035 m per finger)
with 7.5 mm to spare on each side. Grasping is by friction alone (no constraint): the fingers
(40 N each) and the cube get rubber-like lateral friction.

``TaskExpert`` is the privileged plan of each task (TCP waypoints and gripper from the object
poses): the scripted operator executes it as a person would, the tests through IK directly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from lam_control.pybullet_quiet import import_pybullet
from lam_control.sim_arm import TABLE_TOP_Z, SimArm

p = import_pybullet()
log = logging.getLogger(__name__)

TASKS = ("reach", "push", "pick_place")


@dataclass
class TaskConfig:
    """Task geometry, randomisation and physics. Units: m, kg, s, rad."""

    cube_size: float = 0.055  # m edge; see the module docstring for why not smaller
    cube_mass: float = 0.1  # kg (a wooden block)
    cube_friction: float = 0.8  # lateral; PyBullet multiplies the two bodies' coefficients
    finger_friction: float = 1.0  # lateral friction set on the gripper's finger links
    cube_yaw_range: float = 0.1  # rad, cube yaw is uniform in +-this (the open gripper has 7.5 mm per side)
    # m, base frame: where things touched at table height go (cube, push goal) ...
    x_range: list[float] = field(default_factory=lambda: [0.24, 0.36])
    y_range: list[float] = field(default_factory=lambda: [-0.13, 0.13])
    # ... and things reached from above (bin, reach marker), with the marker's height range.
    high_x_range: list[float] = field(default_factory=lambda: [0.24, 0.44])
    high_y_range: list[float] = field(default_factory=lambda: [-0.18, 0.18])
    target_z_range: list[float] = field(default_factory=lambda: [0.10, 0.30])
    reach_tolerance: float = 0.02  # m, TCP to marker for reach success
    goal_radius: float = 0.04  # m, push goal disc; success = cube centre inside it
    push_distance: list[float] = field(default_factory=lambda: [0.08, 0.14])  # m, cube -> goal
    bin_inner: float = 0.13  # m, square inner width of the bin
    bin_height: float = 0.05  # m, wall height above the table
    min_separation: float = 0.16  # m, cube to bin centre (and cube to marker-free space)
    rest_speed: float = 0.05  # m/s, a cube slower than this is resting
    time_limits: dict = field(default_factory=lambda: {"reach": 10.0, "push": 30.0, "pick_place": 30.0})

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"TaskConfig.{name} must not be None")
        for name in ("cube_size", "cube_mass", "cube_friction", "finger_friction", "reach_tolerance",
                     "goal_radius", "bin_inner", "bin_height", "min_separation", "rest_speed"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"TaskConfig.{name} must be finite and > 0, got {value!r}")
        if not (np.isfinite(self.cube_yaw_range) and 0 <= self.cube_yaw_range <= np.pi):
            raise ValueError(f"TaskConfig.cube_yaw_range must be in [0, pi] rad, got {self.cube_yaw_range!r}")
        for name in ("x_range", "y_range", "high_x_range", "high_y_range", "target_z_range", "push_distance"):
            value = [float(v) for v in getattr(self, name)]
            if len(value) != 2 or not np.all(np.isfinite(value)) or value[0] > value[1]:
                raise ValueError(f"TaskConfig.{name} must be [low, high] with low <= high, got {value}")
            setattr(self, name, value)
        if self.bin_inner <= self.cube_size:
            raise ValueError(f"TaskConfig.bin_inner ({self.bin_inner}) must exceed cube_size ({self.cube_size})")
        missing = [t for t in TASKS if not (self.time_limits.get(t, 0) > 0)]
        if missing:
            raise ValueError(f"TaskConfig.time_limits needs a positive limit (s) for {missing}, got {self.time_limits}")


def _pose(body: int, client: int) -> np.ndarray:
    pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=client)
    return np.array(list(pos) + list(orn))  # (7,) x y z qx qy qz qw


class Task:
    """A task on a SimArm. Subclasses build props in ``_build`` and place them in ``_place``."""

    name = ""

    def __init__(self, arm: SimArm, config: TaskConfig | None = None):
        self.arm, self.config = arm, config or TaskConfig()
        self.client = arm.client
        self.time_limit = float(self.config.time_limits[self.name])
        self.object_names: list[str] = []
        self.bodies: list[int] = []
        self.seed: int | None = None
        self._set_finger_friction()
        self._build()

    # -- scene ------------------------------------------------------------------------------
    def _set_finger_friction(self) -> None:
        n_arm = len(self.arm.robot.joint_names)
        for link in self.arm.joint_ids[n_arm:]:  # a PyBullet link index is its parent joint's
            p.changeDynamics(self.arm.body, link, lateralFriction=self.config.finger_friction,
                             frictionAnchor=1, physicsClientId=self.client)

    def _add(self, name: str, body: int) -> int:
        self.object_names.append(name)
        self.bodies.append(body)
        return body

    def _cube(self, rgba) -> int:
        c, half = self.config, self.config.cube_size / 2
        shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=[half] * 3, physicsClientId=self.client)
        look = p.createVisualShape(p.GEOM_BOX, halfExtents=[half] * 3, rgbaColor=rgba, physicsClientId=self.client)
        body = p.createMultiBody(c.cube_mass, shape, look, [0.4, 0.0, half], physicsClientId=self.client)
        p.changeDynamics(body, -1, lateralFriction=c.cube_friction, spinningFriction=0.001,
                         rollingFriction=0.0, physicsClientId=self.client)
        return body

    def _marker(self, shape: int, rgba, **kwargs) -> int:
        look = p.createVisualShape(shape, rgbaColor=rgba, physicsClientId=self.client, **kwargs)
        return p.createMultiBody(0, -1, look, [0.4, 0.0, 0.2], physicsClientId=self.client)

    def _build(self) -> None:
        raise NotImplementedError

    def _place(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _set(self, body: int, position, yaw: float = 0.0) -> None:
        p.resetBasePositionAndOrientation(body, [float(v) for v in position],
                                          p.getQuaternionFromEuler([0.0, 0.0, float(yaw)]),
                                          physicsClientId=self.client)
        p.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0], physicsClientId=self.client)

    def _xy(self, rng: np.random.Generator, high: bool = False) -> np.ndarray:
        c = self.config
        xs, ys = (c.high_x_range, c.high_y_range) if high else (c.x_range, c.y_range)
        return np.array([rng.uniform(*xs), rng.uniform(*ys)])

    def _yaw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(-self.config.cube_yaw_range, self.config.cube_yaw_range))

    # -- API --------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Re-place the objects from ``seed`` and teleport the arm home (gripper open).

        The arm's trajectory and faults are dropped and its safety filter restarts from the new
        pose on the next tick; a latched e-stop stays latched (only an explicit reset clears it).
        """
        arm = self.arm
        estopped = arm.filter is not None and arm.filter.estopped
        arm.reset()
        arm.reset_positions(arm.robot.home_positions())
        if estopped:
            arm.estop()
        self.seed = int(seed)
        self._place(np.random.default_rng(self.seed))

    def object_poses(self) -> np.ndarray:
        """(M, 7) x y z qx qy qz qw of each object in ``object_names`` order, base frame."""
        return np.array([_pose(b, self.client) for b in self.bodies]).reshape(len(self.bodies), 7)

    def tcp(self) -> np.ndarray:
        return self.arm.tcp_position()

    def success(self) -> bool:
        raise NotImplementedError

    def info(self) -> dict:
        """JSON-safe summary: task, seed, success and task-specific distances (m)."""
        return {"task": self.name, "seed": self.seed, "success": bool(self.success()),
                **{k: round(float(v), 5) for k, v in self._distances().items()}}

    def _distances(self) -> dict:
        return {}

    def _touching_robot(self, body: int) -> bool:
        return bool(p.getContactPoints(bodyA=body, bodyB=self.arm.body, physicsClientId=self.client))

    def _speed(self, body: int) -> float:
        return float(np.linalg.norm(p.getBaseVelocity(body, physicsClientId=self.client)[0]))


class ReachTask(Task):
    """Bring the TCP within ``reach_tolerance`` of a visual-only marker (no collision)."""

    name = "reach"

    def _build(self) -> None:
        self.target = self._add("target", self._marker(p.GEOM_SPHERE, [0.1, 0.8, 0.2, 0.6], radius=0.015))

    def _place(self, rng: np.random.Generator) -> None:
        xy = self._xy(rng, high=True)
        self._set(self.target, [xy[0], xy[1], rng.uniform(*self.config.target_z_range)])

    def _distances(self) -> dict:
        return {"tcp_to_target": np.linalg.norm(self.tcp() - self.object_poses()[0, :3])}

    def success(self) -> bool:
        return bool(self._distances()["tcp_to_target"] <= self.config.reach_tolerance)


class PushTask(Task):
    """Push the cube until its centre lies inside a goal disc drawn on the table."""

    name = "push"

    def _build(self) -> None:
        self.cube = self._add("cube", self._cube([0.85, 0.2, 0.15, 1]))
        self.goal = self._add("goal", self._marker(p.GEOM_CYLINDER, [0.1, 0.4, 0.9, 0.5],
                                                   radius=self.config.goal_radius, length=0.002))

    def _place(self, rng: np.random.Generator) -> None:
        c = self.config
        while True:  # rejection sampling: both the cube and the goal inside the comfortable area
            cube = self._xy(rng)
            angle, dist = rng.uniform(-np.pi, np.pi), rng.uniform(*c.push_distance)
            goal = cube + dist * np.array([np.cos(angle), np.sin(angle)])
            if c.x_range[0] <= goal[0] <= c.x_range[1] and c.y_range[0] <= goal[1] <= c.y_range[1]:
                break
        self._set(self.cube, [cube[0], cube[1], TABLE_TOP_Z + c.cube_size / 2], self._yaw(rng))
        self._set(self.goal, [goal[0], goal[1], TABLE_TOP_Z + 0.001])

    def _distances(self) -> dict:
        poses = self.object_poses()
        return {"cube_to_goal": np.linalg.norm(poses[0, :2] - poses[1, :2])}

    def success(self) -> bool:
        return bool(self._distances()["cube_to_goal"] <= self.config.goal_radius)


class PickPlaceTask(Task):
    """Pick the cube up and leave it resting inside the bin, released."""

    name = "pick_place"
    WALL = 0.01  # m, bin wall and floor thickness

    def _build(self) -> None:
        self.cube = self._add("cube", self._cube([0.85, 0.2, 0.15, 1]))
        self.bin = self._add("bin", self._bin())

    def _bin(self) -> int:
        c, w = self.config, self.WALL
        half_in, h = c.bin_inner / 2, c.bin_height
        outer = half_in + w
        boxes = [([outer, outer, w / 2], [0, 0, w / 2])]  # floor
        for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ext = [w / 2, outer, h / 2] if sx else [outer, w / 2, h / 2]
            boxes.append((ext, [sx * (half_in + w / 2), sy * (half_in + w / 2), h / 2]))
        kw = dict(shapeTypes=[p.GEOM_BOX] * len(boxes), halfExtents=[b[0] for b in boxes],
                  physicsClientId=self.client)
        shape = p.createCollisionShapeArray(collisionFramePositions=[b[1] for b in boxes], **kw)
        look = p.createVisualShapeArray(visualFramePositions=[b[1] for b in boxes],
                                        rgbaColors=[[0.3, 0.3, 0.75, 1]] * len(boxes), **kw)
        return p.createMultiBody(0, shape, look, [0.4, 0.0, TABLE_TOP_Z], physicsClientId=self.client)

    def _place(self, rng: np.random.Generator) -> None:
        c = self.config
        while True:
            cube, bin_xy = self._xy(rng), self._xy(rng, high=True)
            if np.linalg.norm(cube - bin_xy) >= c.min_separation:
                break
        self._set(self.bin, [bin_xy[0], bin_xy[1], TABLE_TOP_Z])
        self._set(self.cube, [cube[0], cube[1], TABLE_TOP_Z + c.cube_size / 2], self._yaw(rng))

    def _distances(self) -> dict:
        poses = self.object_poses()
        return {"cube_to_bin": np.linalg.norm(poses[0, :2] - poses[1, :2]),
                "cube_height": poses[0, 2] - TABLE_TOP_Z}

    def in_bin(self) -> bool:
        """Cube centre over the bin's inner floor (bin frame) and below the wall tops."""
        poses = self.object_poses()
        rel = poses[0, :3] - poses[1, :3]
        yaw = p.getEulerFromQuaternion(poses[1, 3:])[2]
        local = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]]) @ rel[:2]
        inside = np.all(np.abs(local) <= self.config.bin_inner / 2)
        return bool(inside and rel[2] <= self.config.bin_height)

    def success(self) -> bool:
        return bool(self.in_bin() and not self._touching_robot(self.cube)
                    and self._speed(self.cube) < self.config.rest_speed)


_TASK_TYPES = {"reach": ReachTask, "push": PushTask, "pick_place": PickPlaceTask}


def make_task(name: str, arm: SimArm, config: TaskConfig | None = None) -> Task:
    """Build task ``name`` in ``arm``'s scene. Call ``reset(seed)`` before use."""
    if name not in _TASK_TYPES:
        raise ValueError(f"unknown task {name!r}: valid tasks are {', '.join(TASKS)}")
    return _TASK_TYPES[name](arm, config)


# -- the privileged plan ---------------------------------------------------------------------------

@dataclass
class ExpertConfig:
    """How the expert moves the TCP. Units: m, s."""

    hover: float = 0.12  # m, TCP height for approaches
    carry: float = 0.20  # m, TCP height while carrying
    min_tcp_z: float = 0.05  # m, lowest TCP asked for (retargeting keeps targets above 0.05 m)
    tolerance: float = 0.012  # m, a waypoint counts as reached
    grip_time: float = 0.6  # s at least between asking the gripper to close and lifting
    release_time: float = 0.6  # s at least between asking it to open and leaving
    settle: float = 0.2  # s the fingers must be seen shut on the cube (or open) before moving on
    descend_time: float = 2.5  # s for a descent to the grasp before starting over from above
    push_lead: float = 0.03  # m the push target runs ahead of the contact point

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None or not (np.isfinite(value) and value > 0):
                raise ValueError(f"ExpertConfig.{name} must be finite and > 0, got {value!r}")


class TaskExpert:
    """A task's plan as a state machine over what a person sees: object poses (M, 7) and the TCP
    (3,). ``step`` gives the TCP waypoint (3,), whether the gripper should be closed, and the phase.
    It re-plans from what it sees (a cube that slipped out of the gripper is picked up again, a
    push that left the line is re-approached)."""

    def __init__(self, task: str, geometry: TaskConfig | None = None, config: ExpertConfig | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: valid tasks are {', '.join(TASKS)}")
        self.task, self.geometry, self.config = task, geometry or TaskConfig(), config or ExpertConfig()
        self.reset()

    def reset(self) -> None:
        self.phase, self._since, self._now = 0, 0.0, 0.0
        self._gripper_since: float | None = None  # when the seen gripper reached the wanted state

    def _go(self, phase: int) -> None:
        self.phase, self._since, self._gripper_since = phase, self._now, None

    def _waited(self, seconds: float) -> bool:
        return self._now - self._since >= seconds

    def _gripper_settled(self, closed: bool) -> bool:
        """The phase's wait is over and the seen fingers have been shut on the cube (or open
        clear of it) for ``settle`` s; without a seen gripper, the wait alone."""
        if not self._waited(self.config.grip_time if closed else self.config.release_time):
            return False
        if self._gripper is None:
            return True
        half = self.geometry.cube_size / 2
        there = self._gripper <= half + 0.004 if closed else self._gripper >= half + 0.006
        if not there:
            self._gripper_since = None
            return False
        if self._gripper_since is None:
            self._gripper_since = self._now
        return self._now - self._gripper_since >= self.config.settle

    def step(self, poses: np.ndarray, tcp: np.ndarray, now: float,
             gripper: float | None = None) -> tuple[np.ndarray, bool]:
        """(TCP waypoint (3,) in the base frame, gripper closed) at ``now`` (s, any clock), from
        object poses (M, 7), the TCP (3,) and the finger opening (m per finger) when seen: a
        person waits until they see the gripper shut on the cube, or open, before moving on."""
        self._now, self._gripper = now, gripper
        poses, tcp = np.asarray(poses, dtype=float), np.asarray(tcp, dtype=float)
        if self.task == "reach":
            return np.array([*poses[0, :2], max(poses[0, 2], self.config.min_tcp_z)]), False
        if self.task == "push":
            return self._push(poses[0, :3], poses[1, :2], tcp)
        return self._pick(poses[0, :3], poses[1, :3], tcp)

    def _at(self, tcp: np.ndarray, target: np.ndarray, tol: float | None = None) -> bool:
        return bool(np.linalg.norm(tcp - target) <= (tol or self.config.tolerance))

    def _push(self, cube: np.ndarray, goal: np.ndarray, tcp: np.ndarray) -> tuple[np.ndarray, bool]:
        c, half = self.config, self.geometry.cube_size / 2
        to_goal = goal - cube[:2]
        remaining = float(np.linalg.norm(to_goal))
        u = to_goal / max(remaining, 1e-6)
        low = c.min_tcp_z
        behind = cube[:2] - u * (half + 0.045)  # clear of the cube with the closed fingers
        if self.phase == 0:  # above the start of the push line
            target = np.array([*behind, c.hover])
            if self._at(tcp[:2], target[:2], 2 * c.tolerance):
                self._go(1)
        elif self.phase == 1:  # down behind the cube
            target = np.array([*behind, low])
            if tcp[2] < low + 0.015:
                self._go(2)
        if self.phase == 2:  # push along the line to the goal; the target follows the cube
            lateral = abs(np.cross(u, tcp[:2] - cube[:2]))
            if remaining < 0.25 * self.geometry.goal_radius:
                self._go(3)
            elif lateral > 0.025 or (tcp[:2] - cube[:2]) @ u > 0:  # off the line or past it
                self._go(4)
            else:
                contact = cube[:2] - u * (half + 0.01)
                return np.array([*(contact + u * min(c.push_lead, remaining)), low]), True
        if self.phase == 3:  # done: lift clear
            return np.array([*tcp[:2], c.hover]), True
        if self.phase == 4:  # retreat upward, then approach again
            if tcp[2] > c.hover - 0.02:
                self._go(0)
            return np.array([*tcp[:2], c.hover]), True
        return target, True

    def _pick(self, cube: np.ndarray, bin_: np.ndarray, tcp: np.ndarray) -> tuple[np.ndarray, bool]:
        c, g = self.config, self.geometry
        grasp_z = max(cube[2] - g.cube_size / 2 + 0.015, c.min_tcp_z)
        release_z = g.bin_height + g.cube_size + 0.02
        held = np.linalg.norm(cube - tcp) < 0.06
        if self.phase in (3, 4, 5) and not held:  # dropped: open and start over
            self._go(0)
        if self.phase == 0:
            target = np.array([*cube[:2], c.hover])
            if self._at(tcp[:2], target[:2]) and abs(tcp[2] - target[2]) < 0.03:
                self._go(1)
            return target, False
        if self.phase == 1:  # descend, keeping centred over the cube
            target = np.array([*cube[:2], grasp_z])
            # Fingertips 4 mm below the cube's top and centred: the fingers are either side of it.
            if np.linalg.norm(tcp[:2] - cube[:2]) < 0.012 and tcp[2] < grasp_z + 0.006:
                self._grasp = target
                self._go(2)
            elif self._waited(c.descend_time):  # a finger landed on the cube, or it slid: again
                self._go(0)
            return target, False
        if self.phase == 2:  # close where the descent ended (following the cube would push it)
            if self._gripper_settled(True):
                self._go(3)
            return self._grasp, True
        if self.phase == 3:
            target = np.array([*tcp[:2], c.carry])
            if tcp[2] > c.carry - 0.03:
                self._go(4)
            return target, True
        if self.phase == 4:
            target = np.array([*bin_[:2], c.carry])
            if self._at(tcp[:2], target[:2], 1.5 * c.tolerance):
                self._go(5)
            return target, True
        if self.phase == 5:
            target = np.array([*bin_[:2], release_z])
            if self._at(tcp, target, 1.5 * c.tolerance):
                self._go(6)
            return target, True
        if self.phase == 6:
            if self._gripper_settled(False):
                self._go(7)
            return np.array([*bin_[:2], release_z]), False
        return np.array([*bin_[:2], c.carry]), False
