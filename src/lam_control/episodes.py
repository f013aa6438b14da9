"""Episode control for recording: start, stop, mark success, discard, and the operator's
corrections, one rosbag2 folder per episode (lam_control.recorder.EpisodeWriter).

Pure: the record node feeds it serialized messages and service calls; `lam record` and tests
can drive it directly. Episodes are numbered after the highest number already in the output
folder (kept or discarded), so a second session appends and never overwrites. A discarded
episode is moved to ``OUT/discarded/``, not deleted: nothing is lost, and the dataset reader
never sees it.
"""
from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lam_control.recorder import EpisodeWriter

log = logging.getLogger(__name__)

EPISODE_RE = re.compile(r"^episode_(\d{6})$")
DISCARDED = "discarded"


class EpisodeStateError(RuntimeError):
    """An episode command that makes no sense now (e.g. stop while not recording)."""


@dataclass
class EpisodeSummary:
    """What one finished episode holds."""

    name: str
    path: str
    task: str
    seed: int | None
    success: bool
    reason: str  # why it ended: stop | time_limit | shutdown | ...
    duration: float  # s between the start and end events
    messages: dict[str, int] = field(default_factory=dict)


def episode_number(path: Path) -> int | None:
    match = EPISODE_RE.match(path.name)
    return int(match.group(1)) if match else None


class EpisodeSession:
    """Records episodes of the given topics ({topic: rosbag2 message type}) under ``out``."""

    def __init__(self, out: str | Path, topics: dict[str, str], flush_period: float = 0.5):
        if not topics:
            raise ValueError("EpisodeSession needs at least one topic to record")
        if not flush_period > 0:
            raise ValueError(f"flush_period must be > 0 s, got {flush_period!r}")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.topics = dict(topics)
        self.flush_period = flush_period
        self.writer: EpisodeWriter | None = None
        self.task, self.seed = "", None  # the task state episodes are tagged with
        self.finished: list[EpisodeSummary] = []
        self._name = ""
        self._start_ns = 0
        self._success = False

    # -- state --------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.writer is not None

    @property
    def current(self) -> str:
        return self._name if self.recording else ""

    def set_task(self, task: str, seed: int | None) -> None:
        """Tag the next episodes with this task and seed (a task reset)."""
        self.task, self.seed = str(task), (None if seed is None else int(seed))

    def _next_path(self) -> Path:
        numbers = [episode_number(p) for p in self.out.iterdir()]
        discarded = self.out / DISCARDED
        if discarded.is_dir():
            numbers += [episode_number(p) for p in discarded.iterdir()]
        numbers = [n for n in numbers if n is not None]
        return self.out / f"episode_{(max(numbers) + 1) if numbers else 0:06d}"

    def _fields(self) -> dict:
        return {"episode": self._name, "task": self.task, "seed": self.seed}

    # -- commands -----------------------------------------------------------------------------
    def start(self, stamp_ns: int) -> str:
        """Open a new episode; returns its name."""
        if self.recording:
            raise EpisodeStateError(f"already recording {self._name}; stop or discard it first")
        path = self._next_path()
        self.writer = EpisodeWriter(path, self.topics, flush_period=self.flush_period)
        self._name, self._start_ns, self._success = path.name, int(stamp_ns), False
        self.writer.event("start", stamp_ns, **self._fields())
        log.info("recording %s (task %r, seed %s)", path, self.task, self.seed)
        return self._name

    def write(self, topic: str, stamp_ns: int, data: bytes) -> bool:
        """Record one serialized message; False (dropped by design) while not recording."""
        if self.writer is None or topic not in self.topics:
            return False
        self.writer.write(topic, stamp_ns, data)
        return True

    def mark_success(self, stamp_ns: int) -> None:
        if not self.recording:
            raise EpisodeStateError("mark_success needs a recording episode")
        if not self._success:
            self._success = True
            self.writer.event("success", stamp_ns, **self._fields())

    def correction(self, stamp_ns: int, **details) -> None:
        """An operator correction (e.g. taking over from the policy), kept as an event."""
        if self.recording:
            self.writer.event("correction", stamp_ns, **self._fields(), **details)

    def stop(self, stamp_ns: int, reason: str = "stop") -> EpisodeSummary:
        """Finish the current episode: end event, finalised bag with its summary as custom data."""
        if not self.recording:
            raise EpisodeStateError("stop needs a recording episode")
        writer, self.writer = self.writer, None
        duration = max(0.0, (int(stamp_ns) - self._start_ns) * 1e-9)
        summary = EpisodeSummary(self._name, str(writer.path), self.task, self.seed, self._success,
                                 reason, round(duration, 3), {t: writer.counts[t] for t in self.topics})
        try:
            writer.event("end", stamp_ns, **self._fields(), success=self._success, reason=reason)
        finally:
            writer.close(custom_data={"task": self.task, "seed": "" if self.seed is None else str(self.seed),
                                      "success": str(self._success).lower(), "reason": reason,
                                      "duration": f"{duration:.3f}"})
        self.finished.append(summary)
        log.info("finished %s: %.2f s, success=%s (%s)", self._name, duration, self._success, reason)
        return summary

    def discard(self, stamp_ns: int) -> str:
        """Discard the recording episode, or else the last finished one: moved to discarded/."""
        if self.recording:
            summary = self.stop(stamp_ns, reason="discarded")
        elif self.finished:
            summary = self.finished[-1]
        else:
            raise EpisodeStateError("nothing to discard: no episode recorded in this session")
        self.finished.remove(summary)
        target = self.out / DISCARDED
        target.mkdir(exist_ok=True)
        shutil.move(summary.path, target / summary.name)
        log.info("discarded %s -> %s", summary.name, target / summary.name)
        return summary.name

    def close(self, stamp_ns: int) -> EpisodeSummary | None:
        """Shutdown: finalise a recording episode (reason 'shutdown'); safe to call twice."""
        if self.recording:
            return self.stop(stamp_ns, reason="shutdown")
        return None
