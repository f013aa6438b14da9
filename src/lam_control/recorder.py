"""Crash-safe episode recording: one rosbag2 MCAP folder per episode, and recovery of a killed one.

Why rosbags' own MCAP writer and not a hand-written one: it produces the metadata.yaml, schemas,
channels, QoS and summary that ``ros2 bag`` and Foxglove expect, and it is what every reader in
this project uses. Its only gap for crash safety is that it buffers a whole 1 MiB chunk in
memory; ``EpisodeWriter`` closes that chunk itself (``McapWriter.close_chunk()``, an internal API,
checked at open and pinned by ``rosbags>=0.11,<0.12`` in setup.py) at least every
``flush_period`` of message time or wall time, flushes and fsyncs the file. A ``kill -9`` then
leaves a file whose complete chunks hold everything up to the last flush; ``recover`` rebuilds a
finalised bag from them. Schemas and channels live inside the chunks (rosbags writes them into the
pending chunk), so the complete chunks alone are enough to rebuild the bag.

Pure core: no rclpy. Messages arrive as CDR bytes (an rclpy raw subscription hands them over).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from lam_control.mcap_scan import McapScanError, scan_mcap

log = logging.getLogger(__name__)

# The topics an episode records by default: {topic: rosbag2 message type}.
DEFAULT_TOPICS = {
    "/lam/keypoints": "sensor_msgs/msg/PointCloud2",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/lam/applied_command": "sensor_msgs/msg/JointState",
    "/lam/joint_command": "trajectory_msgs/msg/JointTrajectory",
    "/lam/object_poses": "geometry_msgs/msg/PoseArray",
    "/lam/events": "std_msgs/msg/String",
}
EVENTS_TOPIC = "/lam/events"
EVENT_KINDS = ("start", "end", "success", "correction", "discard")
_TYPESTORE = None


def typestore():
    """The ROS 2 Kilted typestore (message definitions for the bag and for (de)serialising)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE


def _custom_value(value) -> str:
    """rosbag2 custom_data holds strings only: bools as true/false, None as '', others as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    return json.dumps(value)


class EpisodeWriter:
    """One episode as one rosbag2 MCAP folder, flushed to disk at least every ``flush_period``.

    ``path`` must not exist yet. ``topics`` maps topic -> message type (default DEFAULT_TOPICS;
    the events topic is always added). ``fsync`` also survives a power cut, not only a killed
    process. A background thread flushes a quiet writer on wall time, so the last messages of a
    recording that stops receiving are on disk within ``flush_period`` too.
    Use as a context manager, or call ``close()``/``abort()``: an exception inside the ``with``
    block still finalises the bag (its custom_data then names the error).
    """

    def __init__(self, path: str | Path, topics: dict[str, str] | None = None, flush_period: float = 0.5,
                 fsync: bool = True, background_flush: bool = True):
        if flush_period is None or not flush_period > 0:
            raise ValueError(f"EpisodeWriter.flush_period must be > 0 s, got {flush_period!r}")
        topics = dict(DEFAULT_TOPICS if topics is None else topics)
        topics.setdefault(EVENTS_TOPIC, "std_msgs/msg/String")
        self.path = Path(path)
        self.flush_period = float(flush_period)
        self.fsync = bool(fsync)
        self.typestore = typestore()
        for topic, msgtype in topics.items():
            if msgtype not in self.typestore.fielddefs:
                raise ValueError(f"EpisodeWriter.topics: unknown message type {msgtype!r} for {topic}")
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._mcap = self._writer.storage
        _check_internals(self._mcap)
        self._conns = {t: self._writer.add_connection(t, m, typestore=self.typestore) for t, m in topics.items()}
        self._mcap.bio.flush()  # the MCAP header is on disk from the start
        self._string = self.typestore.types["std_msgs/msg/String"]
        self._lock = threading.Lock()
        self._chunk_first_ns: int | None = None
        self._last_flush = time.monotonic()
        self.counts = {t: 0 for t in topics}
        self.events: list[dict] = []
        self.flushes = 0
        self._open = True
        self._stop = threading.Event()
        self._thread = None
        if background_flush:
            self._thread = threading.Thread(target=self._flush_loop, name=f"flush-{self.path.name}", daemon=True)
            self._thread.start()

    # -- writing ------------------------------------------------------------------------------
    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        """Record one CDR-serialised message of a registered topic, stamped ``timestamp_ns``."""
        conn = self._conns.get(topic)
        if conn is None:
            raise ValueError(f"EpisodeWriter.write: topic {topic!r} is not recorded; known: {sorted(self._conns)}")
        stamp = int(timestamp_ns)
        with self._lock:
            if not self._open:
                raise RuntimeError(f"EpisodeWriter for {self.path.name} is closed")
            self._writer.write(conn, stamp, data)
            self.counts[topic] += 1
            if self._chunk_first_ns is None:
                self._chunk_first_ns = stamp
            if (stamp - self._chunk_first_ns >= self.flush_period * 1e9
                    or time.monotonic() - self._last_flush >= self.flush_period):
                self._flush_locked()

    def event(self, kind: str, stamp_ns: int, **fields) -> None:
        """Record an episode event as JSON on /lam/events: {"event": kind, **fields}."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"EpisodeWriter.event: kind must be one of {EVENT_KINDS}, got {kind!r}")
        payload = {"event": kind, **fields}
        text = json.dumps(payload, default=str)
        data = self.typestore.serialize_cdr(self._string(data=text), "std_msgs/msg/String")
        self.write(EVENTS_TOPIC, stamp_ns, bytes(data))
        self.events.append({**payload, "stamp_ns": int(stamp_ns)})
        if kind in ("start", "end", "discard"):
            self.flush()  # the episode's boundaries are never the part a crash loses

    def flush(self) -> None:
        """Put everything written so far on disk (a complete chunk, flushed and fsynced)."""
        with self._lock:
            if self._open:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._mcap.chunk.msgs:  # never an empty chunk: its time range would be meaningless
            self._mcap.close_chunk()
            self.flushes += 1
        self._mcap.bio.flush()
        if self.fsync:
            os.fsync(self._mcap.bio.fileno())
        self._chunk_first_ns = None
        self._last_flush = time.monotonic()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_period / 2):
            with self._lock:
                if self._open and time.monotonic() - self._last_flush >= self.flush_period:
                    self._flush_locked()

    # -- ending -------------------------------------------------------------------------------
    def summary(self) -> dict[str, str]:
        """custom_data derived from the events: task, seed, episode, success, discarded, corrections."""
        return _events_summary(self.events, recovered=False)

    def close(self, custom_data: dict | None = None) -> Path:
        """Finalise the bag (index, summary, metadata.yaml). ``custom_data`` overrides the summary."""
        self._stop_thread()
        with self._lock:
            if not self._open:
                return self.path
            self._open = False
            try:
                for key, value in {**self.summary(), **(custom_data or {})}.items():
                    self._writer.set_custom_data(str(key), _custom_value(value))
                self._writer.close()
            except BaseException:
                self._writer.abort()  # what was flushed stays recoverable
                raise
        log.info("episode %s finalised: %s", self.path.name, self.counts)
        return self.path

    def abort(self, delete: bool = False) -> None:
        """Stop without finalising. What was written stays on disk (``recover`` finalises it)
        unless ``delete``, which removes the episode folder."""
        self._stop_thread()
        with self._lock:
            if self._open:
                self._open = False
                try:
                    self._flush_locked()
                finally:
                    self._writer.abort()
        if delete:
            shutil.rmtree(self.path, ignore_errors=True)

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def closed(self) -> bool:
        return not self._open

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.close({"error": f"{exc_type.__name__}: {exc}"} if exc_type else None)
        except Exception:
            self.abort()
            raise
        return False


def _check_internals(storage) -> None:
    missing = [a for a in ("close_chunk", "chunk", "bio") if not hasattr(storage, a)]
    if not missing and not hasattr(storage.chunk, "msgs"):
        missing.append("chunk.msgs")
    if missing:
        from importlib.metadata import version
        raise RuntimeError(f"rosbags {version('rosbags')}: McapWriter lacks {missing}; crash-safe recording "
                           "flushes its chunks itself and needs rosbags>=0.11,<0.12 (see setup.py)")


# ---- recovery ----------------------------------------------------------------------------------

class RecoveryError(ValueError):
    """An episode folder that cannot be recovered (no MCAP, or not an MCAP file at all)."""


@dataclass
class RecoveryReport:
    """What ``recover`` did to one episode folder."""

    episode: str
    action: str  # "recovered" | "nothing to do"
    messages: dict[str, int] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    bytes_total: int = 0
    bytes_kept: int = 0
    bytes_dropped: int = 0
    chunks: int = 0
    original: str = ""  # where the damaged file was kept
    reason: str = ""

    @property
    def span_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) * 1e-9

    def to_dict(self) -> dict:
        return {**asdict(self), "span_s": round(self.span_s, 6)}


def _mcap_in(folder: Path) -> Path | None:
    own = folder / f"{folder.name}.mcap"
    if own.exists():
        return own
    found = sorted(folder.glob("*.mcap"))
    return found[0] if found else None


def is_finalised(folder: Path) -> bool:
    """True when rosbags opens the folder: metadata.yaml present and the MCAP whole."""
    try:
        with Reader(folder):
            return True
    except Exception:  # noqa: BLE001 - any failure to open means "needs recovery"
        return False


def recover(path: str | Path) -> RecoveryReport:
    """Rebuild a killed recorder's episode folder into a finalised rosbag2 bag.

    Keeps every complete chunk of the (truncated) MCAP, writes a new finalised bag with the same
    name, keeps the damaged file as ``*.mcap.orig`` (and an old metadata.yaml as
    ``metadata.yaml.orig``): nothing is lost. custom_data comes from the recorded events, with
    ``recovered: true``. Idempotent: a healthy folder is left alone ("nothing to do").
    """
    folder = Path(path)
    if not folder.is_dir():
        raise RecoveryError(f"episode {folder.name}: no such folder {folder}")
    if is_finalised(folder):
        return RecoveryReport(folder.name, "nothing to do", reason="finalised bag, readable")
    source = _mcap_in(folder)
    if source is None:
        origs = sorted(folder.glob("*.mcap.orig"))  # a recovery interrupted between its renames
        if not origs:
            raise RecoveryError(f"episode {folder.name}: no .mcap file in {folder}")
        source = origs[-1]
    data = source.read_bytes()
    try:
        scan = scan_mcap(data)
    except McapScanError as exc:
        raise RecoveryError(f"episode {folder.name}: {exc} ({source})") from None
    report = _rewrite(folder, source, scan)
    report.bytes_total, report.bytes_kept = len(data), scan.good_end
    report.bytes_dropped = len(data) - scan.good_end
    report.reason = scan.reason
    log.warning("recovered %s: %d messages over %.2f s kept, %d bytes dropped (%s)", folder.name,
                sum(report.messages.values()), report.span_s, report.bytes_dropped, scan.reason)
    return report


def _rewrite(folder: Path, source: Path, scan) -> RecoveryReport:
    from rosbags.rosbag2.storage_mcap import get_qos
    store = typestore()
    tmp = folder.parent / f".{folder.name}.recovering"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    writer = Writer(tmp / folder.name, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conns, topics, events = {}, {}, []
    for cid, (sid, topic, encoding, meta) in sorted(scan.channels.items()):
        name, _, msgdef = scan.schemas[sid]
        rihs = store.hash_rihs01(name) if name in store.fielddefs else "RIHS01_" + "0" * 64
        conns[cid] = writer.add_connection(topic, name, msgdef=msgdef, rihs01=rihs, serialization_format=encoding,
                                           offered_qos_profiles=get_qos(meta))
        topics[cid] = topic
    report = RecoveryReport(folder.name, "recovered", messages={t: 0 for t in topics.values()},
                            chunks=scan.chunks)
    stamps = []
    for cid, stamp, payload in scan.messages:
        if cid not in conns:
            continue
        writer.write(conns[cid], stamp, payload)
        report.messages[topics[cid]] += 1
        stamps.append(stamp)
        if topics[cid] == EVENTS_TOPIC:
            try:
                events.append(json.loads(store.deserialize_cdr(payload, "std_msgs/msg/String").data))
            except (ValueError, TypeError):
                log.warning("episode %s: unreadable event at %d ns, kept as it is", folder.name, stamp)
    if stamps:
        report.start_ns, report.end_ns = min(stamps), max(stamps)
    for key, value in _events_summary(events).items():
        writer.set_custom_data(key, value)
    writer.close()
    # Renames last: the damaged original is kept before the new bag takes its name.
    if source.suffix == ".mcap":
        orig = source.with_name(source.name + ".orig")
        n = 1
        while orig.exists():
            orig, n = source.with_name(f"{source.name}.orig{n}"), n + 1
        source.rename(orig)
    else:
        orig = source
    report.original = str(orig)
    (tmp / folder.name / f"{folder.name}.mcap").replace(folder / f"{folder.name}.mcap")
    if (folder / "metadata.yaml").exists():
        (folder / "metadata.yaml").replace(folder / "metadata.yaml.orig")
    (tmp / folder.name / "metadata.yaml").replace(folder / "metadata.yaml")
    shutil.rmtree(tmp, ignore_errors=True)
    return report


def _events_summary(events: list[dict], recovered: bool = True) -> dict[str, str]:
    out = {}
    for ev in events:
        for key in ("task", "seed", "episode"):
            if isinstance(ev, dict) and key in ev and key not in out:
                out[key] = _custom_value(ev[key])
    kinds = [ev.get("event") for ev in events if isinstance(ev, dict)]
    out.update(success=_custom_value("success" in kinds), discarded=_custom_value("discard" in kinds),
               corrections=str(kinds.count("correction")), ended=_custom_value("end" in kinds))
    if recovered:
        out["recovered"] = "true"
    return out
