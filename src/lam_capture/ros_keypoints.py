"""Keypoints <-> sensor_msgs/PointCloud2 (x, y, z, confidence per landmark) and RViz markers."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2, PointField
from visualization_msgs.msg import Marker, MarkerArray

from lam_capture.skeleton import BODY, Keypoints, Skeleton

FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
          for i, n in enumerate(("x", "y", "z", "confidence"))]
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("confidence", "<f4")])
SKELETONS = {BODY.frame_id: BODY}


class CloudError(ValueError):
    """A keypoints message that does not describe a known skeleton."""


def keypoints_to_cloud(kp: Keypoints, stamp) -> PointCloud2:
    """One point per landmark in the skeleton's order; frame_id names the skeleton."""
    data = np.empty(len(kp.points), dtype=POINT_DTYPE)
    data["x"], data["y"], data["z"] = kp.points.T.astype(np.float32)
    data["confidence"] = kp.confidence.astype(np.float32)
    msg = PointCloud2()
    msg.header.stamp = stamp
    msg.header.frame_id = kp.skeleton.frame_id
    msg.height, msg.width = 1, len(kp.points)
    msg.fields = FIELDS
    msg.is_bigendian = False
    msg.point_step = POINT_DTYPE.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = data.tobytes()
    return msg


def cloud_to_keypoints(msg: PointCloud2, stamp: float) -> Keypoints:
    """Parse a keypoints cloud; CloudError if its layout or skeleton is not the expected one.

    Non-finite values are kept as they are (the consumer's validation decides what to do).
    """
    skeleton: Skeleton | None = SKELETONS.get(msg.header.frame_id)
    if skeleton is None:
        raise CloudError(f"unknown skeleton frame_id {msg.header.frame_id!r}; expected one of {list(SKELETONS)}")
    names = [f.name for f in msg.fields]
    if names[:4] != ["x", "y", "z", "confidence"] or msg.point_step != POINT_DTYPE.itemsize \
            or msg.is_bigendian:
        raise CloudError(f"keypoints cloud must have float32 fields x, y, z, confidence; got {names}")
    if msg.width * msg.height != len(skeleton.names) or len(msg.data) != msg.point_step * len(skeleton.names):
        raise CloudError(f"keypoints cloud has {msg.width * msg.height} points, skeleton "
                         f"{skeleton.frame_id} has {len(skeleton.names)}")
    data = np.frombuffer(bytes(msg.data), dtype=POINT_DTYPE)
    points = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(float)
    return Keypoints(points, data["confidence"].astype(float), stamp, skeleton)


def skeleton_markers(kp: Keypoints, stamp, min_confidence: float = 0.0) -> MarkerArray:
    """Spheres at confident landmarks and lines along confident bones, for RViz/Foxglove."""
    ok = kp.confidence > min_confidence
    joints = Marker(type=Marker.SPHERE_LIST, action=Marker.ADD, ns="lam_skeleton_joints", id=0)
    bones = Marker(type=Marker.LINE_LIST, action=Marker.ADD, ns="lam_skeleton_bones", id=1)
    for m, size, rgb in ((joints, 0.03, (1.0, 0.5, 0.1)), (bones, 0.01, (0.2, 0.7, 1.0))):
        m.header.stamp, m.header.frame_id = stamp, kp.skeleton.frame_id
        m.scale.x = m.scale.y = m.scale.z = size
        m.color.r, m.color.g, m.color.b, m.color.a = (*rgb, 1.0)
        m.pose.orientation.w = 1.0
    joints.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in kp.points[ok]]
    for a, b in kp.skeleton.bones:
        if ok[a] and ok[b]:
            bones.points += [Point(x=float(v[0]), y=float(v[1]), z=float(v[2])) for v in (kp.points[a], kp.points[b])]
    return MarkerArray(markers=[joints, bones])
