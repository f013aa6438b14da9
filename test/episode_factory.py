"""Real episode folders for tests: CDR messages from the rosbags typestore, written by EpisodeWriter.

Joint motion is analytic (so resampling can be checked against the truth); keypoints are a real
motion-capture clip (pybullet_data's DeepMimic punch, through lam_capture.mocap).
"""
from __future__ import annotations

import functools

import numpy as np

from lam_control.recorder import EpisodeWriter, typestore
from lam_control.robot import RobotConfig

TS = typestore()
_CFG = RobotConfig()
ARM = list(_CFG.joint_names)
FINGERS = list(_CFG.gripper_joints)
JOINTS = ARM + FINGERS
T0 = 1_700_000_000_000_000_000  # a realistic wall-clock epoch in ns


def _stamp(ns: int):
    return TS.types["builtin_interfaces/msg/Time"](sec=int(ns // 10**9), nanosec=int(ns % 10**9))


def _header(ns: int, frame: str = ""):
    return TS.types["std_msgs/msg/Header"](stamp=_stamp(ns), frame_id=frame)


def joint_state(ns: int, names: list[str], positions) -> bytes:
    msg = TS.types["sensor_msgs/msg/JointState"](
        header=_header(ns), name=list(names), position=np.ascontiguousarray(positions, dtype=np.float64),
        velocity=np.zeros(0), effort=np.zeros(0))
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def trajectory(ns: int, names: list[str], positions) -> bytes:
    dur = TS.types["builtin_interfaces/msg/Duration"](sec=0, nanosec=20_000_000)
    point = TS.types["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=np.ascontiguousarray(positions, dtype=np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
        effort=np.zeros(0), time_from_start=dur)
    msg = TS.types["trajectory_msgs/msg/JointTrajectory"](header=_header(ns), joint_names=list(names), points=[point])
    return bytes(TS.serialize_cdr(msg, "trajectory_msgs/msg/JointTrajectory"))


def keypoint_cloud(ns: int, points: np.ndarray, confidence: np.ndarray) -> bytes:
    """PointCloud2 laid out as lam_capture.ros_keypoints does: x y z confidence float32 per landmark."""
    field = TS.types["sensor_msgs/msg/PointField"]
    fields = [field(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate(("x", "y", "z", "confidence"))]
    data = np.concatenate([points, confidence[:, None]], axis=1).astype("<f4")  # (75, 4)
    msg = TS.types["sensor_msgs/msg/PointCloud2"](
        header=_header(ns, "lam_body"), height=1, width=len(points), fields=fields, is_bigendian=False,
        point_step=16, row_step=16 * len(points), data=np.frombuffer(data.tobytes(), dtype=np.uint8),
        is_dense=True)
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))


def pose_array(ns: int, poses: np.ndarray) -> bytes:
    t = TS.types
    msg = t["geometry_msgs/msg/PoseArray"](header=_header(ns, "world"), poses=[
        t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
                                    orientation=t["geometry_msgs/msg/Quaternion"](x=p[3], y=p[4], z=p[5], w=p[6]))
        for p in np.asarray(poses, dtype=float)])
    return bytes(TS.serialize_cdr(msg, "geometry_msgs/msg/PoseArray"))


@functools.lru_cache(maxsize=1)
def mocap_keypoints() -> np.ndarray:
    """A real motion-capture clip's 75 landmarks per frame (F, 75, 3), metres, at 30 Hz."""
    from lam_capture.mocap import clip_keypoints, load_clip
    return clip_keypoints(load_clip("punch"))


def true_state(t: np.ndarray) -> np.ndarray:
    """The analytic joint motion, t in s from the episode start: (T, 9) rad / m."""
    t = np.asarray(t, dtype=float)[:, None]
    k = np.arange(len(ARM))[None, :]
    arm = 0.4 * np.sin(2 * np.pi * (0.3 + 0.1 * k) * t + 0.5 * k)
    fingers = 0.02 + 0.015 * np.sin(2 * np.pi * 0.5 * t) * np.ones((1, len(FINGERS)))
    return np.concatenate([arm, fingers], axis=1)


def true_command(t: np.ndarray) -> np.ndarray:
    """Commands lead the state by 50 ms."""
    return true_state(np.asarray(t) + 0.05)


def true_poses(t: np.ndarray, objects: int) -> np.ndarray:
    """(T, M, 7): objects sliding along x at 0.1 m/s, identity orientation."""
    t = np.asarray(t, dtype=float)
    out = np.zeros((len(t), objects, 7))
    for m in range(objects):
        out[:, m, 0] = 0.4 + 0.1 * t
        out[:, m, 1] = -0.2 + 0.2 * m
        out[:, m, 2] = 0.02
        out[:, m, 6] = 1.0
    return out


def write_episode(path, duration: float = 2.0, task: str = "reach", seed: int = 0, success: bool = True,
                  objects: int = 2, keypoints: bool = True, js_rate: float = 100.0, cmd_rate: float = 50.0,
                  kp_rate: float = 30.0, obj_rate: float = 10.0, t0: int = T0, jitter_ns: int = 0,
                  shuffle_names: bool = False, end: bool = True, rng_seed: int = 0) -> dict:
    """Record one episode with EpisodeWriter; returns what was written (stamps and values per topic)."""
    rng = np.random.default_rng(rng_seed)
    streams = []  # (ns, topic, bytes)
    written: dict[str, list] = {}

    def sample(rate: float):
        n = int(duration * rate) + 1
        ns = t0 + np.round(np.arange(n) * 1e9 / rate).astype(np.int64)
        if jitter_ns:
            ns = ns + rng.integers(-jitter_ns, jitter_ns + 1, size=n)
            ns = np.clip(ns, t0, t0 + int(duration * 1e9))
        return np.sort(ns)

    order = list(JOINTS)
    for ns in sample(js_rate):
        q = true_state([(ns - t0) * 1e-9])[0]
        names = order[::-1] if shuffle_names else order  # by name, never by index
        vals = q[::-1] if shuffle_names else q
        streams.append((ns, "/joint_states", joint_state(ns, names, vals)))
        written.setdefault("/joint_states", []).append((ns, q))
    for ns in sample(cmd_rate):
        c = true_command([(ns - t0) * 1e-9])[0]
        streams.append((ns, "/lam/applied_command", joint_state(ns, JOINTS, c)))
        streams.append((ns, "/lam/joint_command", trajectory(ns, JOINTS, c)))
        written.setdefault("/lam/applied_command", []).append((ns, c))
    if objects:
        for ns in sample(obj_rate):
            p = true_poses([(ns - t0) * 1e-9], objects)[0]
            streams.append((ns, "/lam/object_poses", pose_array(ns, p)))
            written.setdefault("/lam/object_poses", []).append((ns, p))
    if keypoints:
        clip = mocap_keypoints()
        for i, ns in enumerate(sample(kp_rate)):
            pts = clip[i % len(clip)]
            conf = np.linspace(0.2, 1.0, len(pts))
            streams.append((ns, "/lam/keypoints", keypoint_cloud(ns, pts, conf)))
            written.setdefault("/lam/keypoints", []).append((ns, np.concatenate([pts, conf[:, None]], 1)))
    streams.sort(key=lambda s: s[0])
    end_ns = t0 + int(round(duration * 1e9))
    fields = {"episode": str(path).rsplit("/", 1)[-1], "task": task, "seed": seed}
    with EpisodeWriter(path) as writer:
        writer.event("start", t0, **fields)
        for ns, topic, data in streams:
            writer.write(topic, int(ns), data)
        if success:
            writer.event("success", end_ns - 1, **fields)
        if end:
            writer.event("end", end_ns, **fields, success=success)
    return {"t0": t0, "end": end_ns, "written": written, "duration": duration}
