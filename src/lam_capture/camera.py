"""``camera:N``: a live OpenCV camera that always hands out its newest frame, and survives unplugging.

A capture thread reads the device as fast as it delivers, so the driver's buffers never
back up, and keeps only the newest frame (RGB, stamped with ``time.monotonic()`` at capture).
``read()`` waits for a frame newer than the last one it returned and never returns one older
than ``SourceOptions.max_frame_age``. A read that fails, raises, or a device that keeps giving
byte-identical frames (a frozen driver) marks the camera unhealthy; the device is released and
opened again with exponential back-off until frames flow. A camera that is absent at start is
not an error: it is retried the same way, so it can be plugged in later.

Import this module before anything imports ``cv2`` (other modules get ``cv2`` from here, see
:func:`load_cv2`): it first caps ``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT``, the time OpenCV's V4L2
backend blocks in ``select()`` for a frame that never comes. Its unit is whole SECONDS
(``tv.tv_sec`` in ``cap_v4l.cpp``, default 10), not milliseconds.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

V4L_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
V4L_SELECT_TIMEOUT_MAX = 2  # s; OpenCV's default of 10 s would hold the capture thread (and close()) that long


def cap_v4l_select_timeout(environ: MutableMapping[str, str] = os.environ) -> int:
    """Keep ``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`` within 1..2 s in ``environ``; returns the value in force.

    A value the operator set inside that range is kept. Unset, longer, zero (select would not
    wait at all, so every read of a healthy camera could fail) or not a whole number (OpenCV
    would raise when parsing it) is replaced by 2.
    """
    raw = environ.get(V4L_SELECT_TIMEOUT_ENV)
    try:
        value = int(raw.strip()) if raw is not None else None
    except ValueError:
        value = None
    if value is not None and 1 <= value <= V4L_SELECT_TIMEOUT_MAX:
        return value
    environ[V4L_SELECT_TIMEOUT_ENV] = str(V4L_SELECT_TIMEOUT_MAX)
    if raw is not None:
        log.info("%s=%r replaced by %d (whole seconds, 1..%d)", V4L_SELECT_TIMEOUT_ENV, raw,
                 V4L_SELECT_TIMEOUT_MAX, V4L_SELECT_TIMEOUT_MAX)
    return V4L_SELECT_TIMEOUT_MAX


# Must run before the first `import cv2` in the process. (OpenCV reads the variable lazily, at a
# camera's first select(), so an earlier cv2 import is harmless as long as no V4L camera was read.)
if "cv2" in sys.modules:
    log.debug("cv2 was imported before lam_capture.camera; %s still applies to cameras opened from now",
              V4L_SELECT_TIMEOUT_ENV)
cap_v4l_select_timeout()

import math  # noqa: E402  (everything below comes after the environment is set)
import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass, fields  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from lam_capture.sources import Frame, Source, SourceOptions  # noqa: E402


def load_cv2():
    """The ``cv2`` module, imported only after the V4L2 select timeout is capped.

    Other modules use ``from lam_capture.camera import load_cv2; cv2 = load_cv2()`` instead of
    ``import cv2`` so the order cannot slip.
    """
    cap_v4l_select_timeout()
    return cv2


def _default_opener(index: int) -> Any:
    return cv2.VideoCapture(index)


@dataclass
class CameraConfig:
    """How a camera recovers. Read from ``SourceOptions.extra`` by field name. Units: s, frames."""

    backoff_initial: float = 0.1  # s, first wait before opening again after a failure
    backoff_max: float = 2.0  # s, the wait doubles up to this
    frozen_frames: int = 10  # this many byte-identical frames in a row = frozen; 0 = never check
    stall_timeout: float = 1.0  # s without a new frame and the camera reports unhealthy
    join_timeout: float = 0.5  # s, close() waits this long for the capture thread
    opener: Callable[[int], Any] | None = None  # index -> cv2.VideoCapture-like; None = cv2.VideoCapture

    def __post_init__(self) -> None:
        for name in ("backoff_initial", "backoff_max", "stall_timeout", "join_timeout"):
            value = getattr(self, name)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not (math.isfinite(value) and value > 0):
                raise ValueError(f"CameraConfig.{name} must be a finite number of seconds > 0, got {value!r}")
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"CameraConfig.backoff_max must be >= backoff_initial ({self.backoff_initial!r} s), "
                             f"got {self.backoff_max!r}")
        f = self.frozen_frames
        if f is None or isinstance(f, bool) or not isinstance(f, int) or f < 0 or f == 1:
            raise ValueError(f"CameraConfig.frozen_frames must be 0 (off) or an integer >= 2, got {f!r}")
        if self.opener is not None and not callable(self.opener):
            raise ValueError(f"CameraConfig.opener must be callable (index -> capture) or None, "
                             f"got {self.opener!r}")

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None) -> CameraConfig:
        """Build from ``SourceOptions.extra``; keys that are not fields are logged and ignored."""
        extra = dict(extra or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(extra) - names)
        if unknown:
            log.warning("camera: ignoring unknown SourceOptions.extra keys %s (known: %s)",
                        unknown, ", ".join(sorted(names)))
        return cls(**{k: v for k, v in extra.items() if k in names})


class CameraSource(Source):
    """The newest RGB frame of OpenCV device ``index``, from a capture thread that reopens it as needed.

    Counters (written by the capture thread only): ``frames_captured`` (frames the device gave),
    ``read_failures`` (reads that gave no frame or raised), ``reopen_count`` (successful opens after
    the first), ``open_failures``, ``frozen_events`` (times the device was dropped for repeating one
    frame), ``device_errors`` (exceptions from the device), ``stale_dropped`` (frames ``read``
    refused as older than ``max_frame_age``).
    """

    def __init__(self, index: int, options: SourceOptions | None = None, config: CameraConfig | None = None):
        self.options = options or SourceOptions()
        self.config = config or CameraConfig.from_extra(self.options.extra)
        self.index = index
        self.spec = f"camera:{index}"
        self.rate = self.options.rate  # Hz, the most frames read() hands out per second
        self._period = 1.0 / self.options.rate  # s
        self._next_slot = -math.inf  # monotonic s; read() hands out no frame captured before this
        self._opener = self.config.opener or _default_opener
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._latest: Frame | None = None
        self._returned_index = -1
        self._healthy = False
        self._reason = "starting: no frame yet"
        self._opened_once = False
        self._last_key: tuple | None = None
        self._repeats = 0
        self.frames_captured = self.read_failures = self.reopen_count = self.open_failures = 0
        self.frozen_events = self.device_errors = self.stale_dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"camera{index}-capture", daemon=True)
        self._thread.start()

    # ---- consumer side ----

    def read(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not returned before, waiting at most ``timeout`` s; None if none is fresh.

        A frame older than ``max_frame_age`` is never returned, and frames come at most ``rate``
        per second. Safe to call from one consumer thread.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                frame = self._latest
                if frame is not None and frame.index > self._returned_index:
                    if now - frame.stamp > self.options.max_frame_age:
                        self.stale_dropped += 1
                        self._returned_index = frame.index  # count and skip it once
                    elif frame.stamp >= self._next_slot:
                        self._returned_index = frame.index
                        # Slots advance by one period so the long-run rate is `rate`; the quarter
                        # period of slack keeps a camera running at exactly `rate` from losing frames.
                        self._next_slot = max(self._next_slot + self._period, frame.stamp + 0.75 * self._period)
                        return frame
                if now >= deadline:
                    return None
                self._cond.wait(deadline - now)
        return None

    @property
    def healthy(self) -> bool:
        """True while fresh frames are flowing."""
        return self._health()[0]

    @property
    def health_reason(self) -> str:
        """Why the camera is unhealthy, or '' when it is healthy."""
        return self._health()[1]

    def _health(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "closed"
        if not self._healthy:
            return False, self._reason
        latest = self._latest
        age = time.monotonic() - latest.stamp if latest is not None else math.inf
        if age > self.config.stall_timeout:
            return False, f"camera {self.index}: no new frame for {age:.1f} s (stalled?)"
        return True, ""

    def stats(self) -> dict[str, int]:
        """The counters, for diagnostics."""
        return {name: getattr(self, name) for name in (
            "frames_captured", "read_failures", "reopen_count", "open_failures", "frozen_events",
            "device_errors", "stale_dropped")}

    @property
    def alive(self) -> bool:
        """True while the capture thread runs."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the capture thread (waiting at most ``join_timeout``); it releases the device as it exits."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(self.config.join_timeout)
        if self._thread.is_alive():
            # Releasing a capture while another thread is inside read() is not safe in OpenCV;
            # the thread releases it itself when the device returns.
            log.warning("camera %d: capture thread still inside the device after %.1f s; "
                        "it releases the device when the read returns", self.index, self.config.join_timeout)

    # ---- capture thread ----

    def _run(self) -> None:
        backoff = self.config.backoff_initial
        device = None
        try:
            while not self._stop.is_set():
                if device is None:
                    device = self._open()
                    if device is None:
                        self._stop.wait(backoff)
                        backoff = min(2 * backoff, self.config.backoff_max)
                        continue
                problem = self._capture_once(device)
                if problem is None:
                    backoff = self.config.backoff_initial
                    continue
                self._set_unhealthy(problem)
                self._release(device)
                device = None
                self._stop.wait(backoff)
                backoff = min(2 * backoff, self.config.backoff_max)
        except BaseException:  # a bug here must not pass silently; the thread is the camera
            log.exception("camera %d: capture thread failed", self.index)
            self._set_unhealthy("capture thread failed (see log)")
            raise
        finally:
            if device is not None:
                self._release(device)
            log.debug("camera %d: capture thread stopped", self.index)

    def _open(self) -> Any | None:
        """Open the device; None (and unhealthy) when it is absent or busy."""
        device = None
        try:
            device = self._opener(self.index)
            ok = device is not None and bool(device.isOpened())
        except Exception as exc:  # noqa: BLE001 - a device error must never end the thread
            self.device_errors += 1
            log.warning("camera %d: opening raised %s: %s", self.index, type(exc).__name__, exc)
            ok = False
        if not ok:
            self.open_failures += 1
            if device is not None:
                self._release(device)
            self._set_unhealthy(f"camera {self.index} could not be opened (unplugged, busy or no permission?)")
            return None
        if self._opened_once:
            self.reopen_count += 1
        self._opened_once = True
        log.info("camera %d opened%s", self.index, f" (reopen #{self.reopen_count})" if self.reopen_count else "")
        return device

    def _capture_once(self, device: Any) -> str | None:
        """Read one frame and publish it; returns what went wrong, or None."""
        try:
            ok, bgr = device.read()
            stamp = time.monotonic()
            if not ok or bgr is None:
                self.read_failures += 1
                return f"camera {self.index}: read gave no frame (unplugged or stalled?)"
            self.frames_captured += 1
            key = (bgr.shape, zlib.crc32(np.ascontiguousarray(bgr)))  # cheap: ~0.2 ms at 640x480
            self._repeats = self._repeats + 1 if key == self._last_key else 1
            self._last_key = key  # kept across reopens, so a still-frozen device is caught at once
            if self.config.frozen_frames and self._repeats >= self.config.frozen_frames:
                self.frozen_events += 1
                return f"camera {self.index}: frozen (the same frame {self.config.frozen_frames}+ times in a row)"
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8, a new array
        except Exception as exc:  # noqa: BLE001 - a device error must never end the thread
            self.read_failures += 1
            self.device_errors += 1
            log.warning("camera %d: read raised %s: %s", self.index, type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            return f"camera {self.index}: read raised {type(exc).__name__}: {exc}"
        with self._cond:
            self._latest = Frame(stamp=stamp, index=self.frames_captured, image=rgb)
            if not self._healthy:
                log.info("camera %d: frames flowing again", self.index)
            self._healthy, self._reason = True, ""
            self._cond.notify_all()
        return None

    def _set_unhealthy(self, reason: str) -> None:
        with self._cond:
            if self._healthy or reason != self._reason:
                log.warning("camera %d unhealthy: %s", self.index, reason)
            self._healthy, self._reason = False, reason

    def _release(self, device: Any) -> None:
        try:
            device.release()
        except Exception as exc:  # noqa: BLE001
            self.device_errors += 1
            log.warning("camera %d: release raised %s: %s", self.index, type(exc).__name__, exc)
