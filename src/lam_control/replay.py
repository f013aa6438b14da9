"""Reading recorded episodes: one rosbag2 MCAP folder -> messages, events, metadata, arrays.

Pure core (rosbags, numpy; no rclpy). Every failure is an ``EpisodeError`` naming the episode and
what is wrong with it; a killed recorder's folder points to ``lam dataset recover``. Arrays are
built by joint NAME, never by index: a message that lists its joints in another order, or only
some of them, still lands in the right columns.

Stamps are the recording (log) times in ns, the clock the episode's events are on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import Reader

from lam_control.recorder import EVENTS_TOPIC, typestore

NUM_KEYPOINTS = 75  # MediaPipe Pose 33 + Hands 21 per hand (lam_capture.skeleton.BODY)
KEYPOINT_FIELDS = ("x", "y", "z", "confidence")
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("confidence", "<f4")])


class EpisodeError(ValueError):
    """An episode folder that cannot be read: missing, unfinalised, truncated or corrupt."""


def _recover_hint(path: Path) -> str:
    return f"run `lam dataset recover {path}` to rebuild it from its complete chunks"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


@dataclass
class Episode:
    """One episode: messages per topic as (stamp_ns, msg), events (dicts with stamp_ns), metadata."""

    name: str
    path: Path
    topics: dict[str, list[tuple[int, object]]] = field(default_factory=dict)
    msgtypes: dict[str, str] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)  # rosbag2 custom_data

    def messages(self, topic: str) -> list[tuple[int, object]]:
        return self.topics.get(topic, [])

    def _event(self, kind: str) -> dict | None:
        return next((e for e in self.events if e.get("event") == kind), None)

    @property
    def start_ns(self) -> int | None:
        """Stamp of the start event (None if there is none)."""
        ev = self._event("start")
        return None if ev is None else ev["stamp_ns"]

    @property
    def end_ns(self) -> int | None:
        """Stamp of the end event, else of the last message (a recovered episode has no end)."""
        ends = [e["stamp_ns"] for e in self.events if e.get("event") == "end"]
        if ends:
            return ends[-1]
        stamps = [s for msgs in self.topics.values() for s, _ in msgs[-1:]]
        return max(stamps) if stamps else None

    @property
    def ended(self) -> bool:
        return self._event("end") is not None

    @property
    def success(self) -> bool:
        return self._event("success") is not None or self.metadata.get("success") == "true"

    @property
    def discarded(self) -> bool:
        return (self._event("discard") is not None or self.metadata.get("discarded") == "true"
                or self.metadata.get("reason") == "discarded")

    @property
    def task(self) -> str:
        ev = self._event("start") or {}
        return str(ev.get("task", self.metadata.get("task", "")))

    @property
    def seed(self) -> int | None:
        ev = self._event("start") or {}
        seed = ev.get("seed", self.metadata.get("seed"))
        try:
            return None if seed in (None, "") else int(seed)
        except (TypeError, ValueError):
            return None

    @property
    def duration(self) -> float:
        """s from the start event to the end event (0 if either is missing)."""
        if self.start_ns is None or self.end_ns is None:
            return 0.0
        return max(0, self.end_ns - self.start_ns) * 1e-9


def _check_folder(folder: Path) -> None:
    name = folder.name
    if not folder.is_dir():
        raise EpisodeError(f"episode {name}: no such folder {folder}")
    mcaps = sorted(folder.glob("*.mcap"))
    if not (folder / "metadata.yaml").exists():
        if mcaps:
            raise EpisodeError(f"episode {name}: not finalised (no metadata.yaml; was the recorder killed?); "
                               + _recover_hint(folder))
        raise EpisodeError(f"episode {name}: no metadata.yaml and no .mcap file in {folder}")
    if not mcaps:
        hint = "; " + _recover_hint(folder) if list(folder.glob("*.mcap.orig")) else ""
        raise EpisodeError(f"episode {name}: metadata.yaml but no .mcap file in {folder}{hint}")


def read_episode(path: str | Path, topics: list[str] | None = None) -> Episode:
    """Read one episode folder (all topics, or only ``topics`` plus the events)."""
    folder = Path(path)
    _check_folder(folder)
    name, store = folder.name, typestore()
    episode = Episode(name, folder)
    try:
        info = yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        episode.metadata = {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise EpisodeError(f"episode {name}: unreadable metadata.yaml ({_one_line(exc)}); "
                           + _recover_hint(folder)) from exc
    try:
        reader = Reader(folder)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several kinds; all mean "unreadable"
        raise EpisodeError(f"episode {name}: truncated or corrupt bag ({_one_line(exc)}); " + _recover_hint(folder)) from exc
    try:
        wanted = [c for c in reader.connections if topics is None or c.topic in topics or c.topic == EVENTS_TOPIC]
        for conn in wanted:
            episode.topics.setdefault(conn.topic, [])
            episode.msgtypes[conn.topic] = conn.msgtype
            if conn.msgtype not in store.fielddefs:
                raise EpisodeError(f"episode {name}: topic {conn.topic} has message type {conn.msgtype}, "
                                   "unknown to the ROS 2 Kilted typestore")
        for conn, stamp, raw in reader.messages(connections=wanted):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            episode.topics[conn.topic].append((stamp, msg))
    except EpisodeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise EpisodeError(f"episode {name}: corrupt data while reading ({_one_line(exc)}); " + _recover_hint(folder)) from exc
    finally:
        reader.close()
    for stamp, msg in episode.topics.get(EVENTS_TOPIC, []):
        try:
            event = json.loads(msg.data)
        except ValueError as exc:
            raise EpisodeError(f"episode {name}: event at {stamp} ns is not JSON: {msg.data!r}") from exc
        if not isinstance(event, dict) or "event" not in event:
            raise EpisodeError(f"episode {name}: event at {stamp} ns has no 'event' key: {msg.data!r}")
        episode.events.append({**event, "stamp_ns": stamp})
    return episode


# ---- arrays ---------------------------------------------------------------------------------

def joint_table(messages: list[tuple[int, object]], names: list[str], field_name: str = "position",
                episode: str = "") -> tuple[np.ndarray, np.ndarray]:
    """JointState messages -> stamps (N,) int64 ns and values (N, J) by NAME.

    A message that omits a joint keeps that joint's previous value (NaN before its first one);
    a joint never seen at all is an EpisodeError.
    """
    index = {n: j for j, n in enumerate(names)}
    stamps = np.empty(len(messages), dtype=np.int64)
    values = np.full((len(messages), len(names)), np.nan)  # (N, J)
    seen = np.zeros(len(names), dtype=bool)
    row = np.full(len(names), np.nan)
    for i, (stamp, msg) in enumerate(messages):
        data = getattr(msg, field_name)
        for name, value in zip(msg.name, data):
            j = index.get(name)
            if j is not None:
                row[j], seen[j] = value, True
        stamps[i], values[i] = stamp, row
    if messages and not seen.all():
        missing = [n for n, s in zip(names, seen) if not s]
        raise EpisodeError(f"episode {episode}: joints {missing} never appear in {len(messages)} messages")
    return stamps, values


def joint_states(ep: Episode, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Measured joint positions (rad / m) from /joint_states by name: (N,), (N, J)."""
    return joint_table(ep.messages("/joint_states"), names, episode=ep.name)


def applied_commands(ep: Episode, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Commands actually sent after the safety filter, from /lam/applied_command: (N,), (N, J)."""
    return joint_table(ep.messages("/lam/applied_command"), names, episode=ep.name)


def command_names(ep: Episode) -> list[str]:
    """Joint names of the applied command (arm + gripper), else of /joint_states."""
    for topic in ("/lam/applied_command", "/joint_states"):
        msgs = ep.messages(topic)
        if msgs:
            return list(msgs[0][1].name)
    return []


def requested_commands(ep: Episode, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """First point of each /lam/joint_command request, by name: (N,), (N, J)."""
    class _Row:  # a JointTrajectory's first point seen as a JointState row
        def __init__(self, msg):
            self.name = list(msg.joint_names)
            self.position = msg.points[0].positions if msg.points else []
    rows = [(s, _Row(m)) for s, m in ep.messages("/lam/joint_command")]
    return joint_table(rows, names, episode=ep.name)


def keypoints(ep: Episode) -> tuple[np.ndarray, np.ndarray]:
    """Operator keypoints from /lam/keypoints: stamps (N,), (N, 75, 4) x y z confidence (m, [0, 1])."""
    msgs = ep.messages("/lam/keypoints")
    out = np.empty((len(msgs), NUM_KEYPOINTS, 4), dtype=np.float32)
    stamps = np.empty(len(msgs), dtype=np.int64)
    for i, (stamp, msg) in enumerate(msgs):
        names = [f.name for f in msg.fields]
        if (tuple(names[:4]) != KEYPOINT_FIELDS or msg.point_step != POINT_DTYPE.itemsize or msg.is_bigendian
                or msg.width * msg.height != NUM_KEYPOINTS):
            raise EpisodeError(f"episode {ep.name}: keypoints at {stamp} ns are not {NUM_KEYPOINTS} points of "
                               f"float32 {KEYPOINT_FIELDS}: fields {names}, {msg.width * msg.height} points")
        data = np.frombuffer(bytes(msg.data), dtype=POINT_DTYPE)
        out[i] = np.stack([data[k] for k in KEYPOINT_FIELDS], axis=1)
        stamps[i] = stamp
    return stamps, out


def object_poses(ep: Episode) -> tuple[np.ndarray, np.ndarray]:
    """Task object poses from /lam/object_poses: stamps (N,), (N, M, 7) x y z qx qy qz qw (m)."""
    msgs = ep.messages("/lam/object_poses")
    counts = {len(m.poses) for _, m in msgs}
    if len(counts) > 1:
        raise EpisodeError(f"episode {ep.name}: object count changes within the episode: {sorted(counts)}")
    m = counts.pop() if counts else 0
    out = np.empty((len(msgs), m, 7), dtype=np.float64)
    for i, (_, msg) in enumerate(msgs):
        for k, p in enumerate(msg.poses):
            out[i, k] = (p.position.x, p.position.y, p.position.z,
                         p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w)
    return np.array([s for s, _ in msgs], dtype=np.int64), out
