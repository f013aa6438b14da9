"""File sources: ``video:PATH`` at its own frame rate (or as fast as processed), ``image:PATH``
repeated at a fixed rate (tests, calibration)."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np

from lam_capture.sources import Frame, Pacer, Source, SourceError, SourceOptions

log = logging.getLogger(__name__)


class VideoSource(Source):
    """Frames of a video file, paced at its frame rate when ``options.realtime``."""

    def __init__(self, path: Path, options: SourceOptions):
        self.path, self.options = path, options
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise SourceError(f"cannot open video {path} (not a video, or an unsupported codec)")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise SourceError(f"video {path} has no readable frames (empty or corrupt)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.rate = float(fps) if fps and math.isfinite(fps) and 1 <= fps <= 1000 else 30.0
        self._pending = first
        self._pacer = Pacer(self.rate)
        self._index = 0
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def _next_bgr(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if self.options.loop and self._index > 0:
            self._cap.release()
            self._cap = cv2.VideoCapture(str(self.path))
            ok, frame = self._cap.read()
            if ok and frame is not None:
                return frame
        return None

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._finished:
            return None
        if self.options.realtime and not self._pacer.wait(timeout):
            return None
        bgr = self._next_bgr()
        if bgr is None:
            self._finished = True
            log.info("video %s finished after %d frames", self.path, self._index)
            return None
        frame = Frame(stamp=time.monotonic(), index=self._index, image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self._index += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class ImageSource(Source):
    """One still image, repeated at ``options.rate`` Hz with a fresh capture stamp each time."""

    def __init__(self, path: Path, options: SourceOptions):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SourceError(f"cannot decode image {path} (not an image, or corrupt)")
        self.image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.rate = options.rate
        self._pacer = Pacer(options.rate)
        self._index = 0

    def read(self, timeout: float = 1.0) -> Frame | None:
        if not self._pacer.wait(timeout):
            return None
        frame = Frame(stamp=time.monotonic(), index=self._index, image=self.image)
        self._index += 1
        return frame
