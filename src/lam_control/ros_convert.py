"""Conversions between ROS 2 messages and lam_control core types (the only ROS-aware helpers)."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseArray
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lam_control.trajectory import Trajectory

NANO = 1_000_000_000


def duration_to_sec(d: Duration) -> float:
    return d.sec + d.nanosec / NANO


def sec_to_duration(t: float) -> Duration:
    ns = int(round(t * NANO))
    return Duration(sec=ns // NANO, nanosec=ns % NANO)


def trajectory_from_msg(msg: JointTrajectory) -> Trajectory:
    """Core trajectory from a JointTrajectory (positions only). Raises TrajectoryError."""
    return Trajectory.build(
        list(msg.joint_names),
        [duration_to_sec(pt.time_from_start) for pt in msg.points],
        [list(pt.positions) for pt in msg.points],
    )


def trajectory_msg(joint_names, times, positions, stamp=None) -> JointTrajectory:
    """A JointTrajectory with positions and time_from_start per point."""
    msg = JointTrajectory()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.joint_names = list(joint_names)
    for t, q in zip(times, positions):
        msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in q],
                                               time_from_start=sec_to_duration(float(t))))
    return msg


def pose_array_msg(poses, frame_id: str, stamp=None) -> PoseArray:
    """A PoseArray from (M, 7) rows x y z qx qy qz qw (m, unit quaternion) in ``frame_id``."""
    msg = PoseArray()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    for x, y, z, qx, qy, qz, qw in poses:
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = float(x), float(y), float(z)
        pose.orientation.x, pose.orientation.y = float(qx), float(qy)
        pose.orientation.z, pose.orientation.w = float(qz), float(qw)
        msg.poses.append(pose)
    return msg


def poses_from_msg(msg: PoseArray):
    """(M, 7) numpy rows x y z qx qy qz qw from a PoseArray."""
    return np.array([[p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y,
                      p.orientation.z, p.orientation.w] for p in msg.poses], dtype=float).reshape(-1, 7)


def joint_state_msg(names, positions, velocities=None, efforts=None, stamp=None) -> JointState:
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    if velocities is not None:
        msg.velocity = [float(v) for v in velocities]
    if efforts is not None:
        msg.effort = [float(v) for v in efforts]
    return msg


def diagnostic_status(name: str, level, message: str, values: dict, hardware_id: str = "") -> DiagnosticStatus:
    """A DiagnosticStatus; ``level`` is DiagnosticStatus.OK / WARN / ERROR / STALE."""
    return DiagnosticStatus(
        level=level if isinstance(level, bytes) else bytes([level]), name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()],
    )
