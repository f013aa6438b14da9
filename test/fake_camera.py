"""A scriptable stand-in for a webcam behind ``cv2.VideoCapture``, for tests of ``lam_capture.camera``.

``FakeCamera`` is the hardware: it delivers 480x640 BGR frames at ``fps`` (``read`` blocks until
the next one is due, as a driver does), and a test scripts its faults: failed reads, exceptions,
a frozen sensor, a stalled stream, an unplugged cable, refusing to open. ``FakeCamera.opener``
is what ``SourceOptions.extra['opener']`` takes: every call is one ``cv2.VideoCapture(index)``
and returns a new ``FakeVideoCapture`` handle.

Frame ``seq`` is written into pixel (0, 0) as B = seq & 0xFF, G = (seq >> 8) & 0xFF, R = 255, so
``FakeCamera.seq_of(rgb)`` reads it back from a converted RGB frame (and R = 255 in channel 0
shows the BGR -> RGB conversion happened).
"""
from __future__ import annotations

import threading
import time

import numpy as np

# cv2.CAP_PROP_* values, so this double does not import cv2 (the camera module must come first).
CAP_PROP_FRAME_WIDTH = 3
CAP_PROP_FRAME_HEIGHT = 4
CAP_PROP_FPS = 5


class FakeCamera:
    """The device. All scripting methods are thread-safe and take effect on the next read/open."""

    def __init__(self, fps: float = 30.0, width: int = 640, height: int = 480, select_timeout: float = 0.5,
                 scene: np.ndarray | None = None):
        self.fps = fps
        self.shape = (height, width, 3)
        self.select_timeout = select_timeout  # s a paused read blocks before failing, like V4L2's select()
        self._lock = threading.Lock()
        self._plugged = True
        self._fail_reads = 0
        self._fail_opens = 0
        self._raise: BaseException | None = None
        self._frozen = False
        self._running = threading.Event()
        self._running.set()
        self._next_due = 0.0
        self._last: np.ndarray | None = None
        self.seq = 0  # frames produced
        self.reads = 0
        self.open_attempts = 0
        self.handles: list[FakeVideoCapture] = []
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        self._base = np.repeat(np.stack([ramp, ramp[::-1], np.full_like(ramp, 64)], axis=-1)[None], height, axis=0)
        if scene is not None:  # a real picture (BGR, height x width) for tests that need a person
            self._base = np.ascontiguousarray(scene[:height, :width])

    # ---- scripting ----

    def unplug(self) -> None:
        """Every read and open fails until ``replug``."""
        with self._lock:
            self._plugged = False

    def replug(self) -> None:
        with self._lock:
            self._plugged = True

    def fail_reads(self, n: int) -> None:
        """The next ``n`` reads return ``(False, None)``."""
        with self._lock:
            self._fail_reads = n

    def fail_opens(self, n: int) -> None:
        """The next ``n`` opens give a handle whose ``isOpened()`` is False."""
        with self._lock:
            self._fail_opens = n

    def raise_on_read(self, exc: BaseException | None) -> None:
        """Every read raises ``exc`` until called with None."""
        with self._lock:
            self._raise = exc

    def freeze(self, frozen: bool = True) -> None:
        """Reads return byte-identical copies of the last frame (a hung sensor) until ``freeze(False)``."""
        with self._lock:
            self._frozen = frozen

    def pause(self) -> None:
        """The stream stalls: reads block up to ``select_timeout``, then fail, until ``resume``."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    # ---- what tests inspect ----

    def opener(self, index: int) -> FakeVideoCapture:
        """``cv2.VideoCapture(index)``."""
        with self._lock:
            self.open_attempts += 1
            opened = self._plugged and self._fail_opens <= 0
            self._fail_opens -= 1
        handle = FakeVideoCapture(self, index, opened)
        self.handles.append(handle)
        return handle

    @property
    def open_handles(self) -> int:
        """Handles that were opened and not released."""
        return sum(h.isOpened() for h in self.handles)

    @staticmethod
    def seq_of(rgb: np.ndarray) -> int:
        """The frame number written into an RGB frame's pixel (0, 0)."""
        return int(rgb[0, 0, 2]) | (int(rgb[0, 0, 1]) << 8)

    # ---- the driver ----

    def _read(self) -> tuple[bool, np.ndarray | None]:
        with self._lock:
            self.reads += 1
            if self._raise is not None:
                raise self._raise
            if not self._plugged:
                return False, None
            if self._fail_reads > 0:
                self._fail_reads -= 1
                return False, None
        if not self._running.wait(self.select_timeout):
            return False, None
        self._pace()
        with self._lock:
            if self._frozen and self._last is not None:
                return True, self._last.copy()
            self.seq += 1
            frame = self._base.copy()  # (H, W, 3) uint8 BGR
            frame[0, 0] = (self.seq & 0xFF, (self.seq >> 8) & 0xFF, 255)
            frame[8:16, :, 1] = self.seq % 256
            self._last = frame
            return True, frame.copy()

    def _pace(self) -> None:
        """Block until the next frame is due, as a driver does."""
        now = time.monotonic()
        with self._lock:
            due = max(self._next_due, now)
            self._next_due = due + 1.0 / self.fps
        if due > now:
            time.sleep(due - now)


class FakeVideoCapture:
    """One ``cv2.VideoCapture`` handle on a ``FakeCamera``: isOpened, read, release, set, get."""

    def __init__(self, camera: FakeCamera, index: int, opened: bool):
        self.camera = camera
        self.index = index
        self._opened = opened
        self.released = False
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return self._opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self._opened:
            return False, None
        return self.camera._read()

    def release(self) -> None:
        self._opened = False
        self.released = True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        defaults = {CAP_PROP_FRAME_WIDTH: self.camera.shape[1], CAP_PROP_FRAME_HEIGHT: self.camera.shape[0],
                    CAP_PROP_FPS: self.camera.fps}
        return float(self.props.get(prop, defaults.get(prop, 0.0)))
