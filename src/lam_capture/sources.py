"""Where the operator comes from: a `--source` spec string -> a Source that yields Frames.

Specs: ``camera:N`` (an OpenCV device), ``video:PATH``, ``image:PATH``, ``mocap:CLIP`` (a
DeepMimic clip by name or path), ``scripted:TASK`` (a synthetic operator solving a sim task:
reach, push or pick_place; lam_capture.scripted). Every Source yields the newest Frame, stamped with the
monotonic time it was captured, and paces itself (a video at its frame rate, an image at the
requested rate, a clip at its own rate).
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lam_capture.skeleton import Keypoints

log = logging.getLogger(__name__)

KINDS = ("camera", "video", "image", "mocap", "scripted")
KEYPOINT_KINDS = ("mocap", "scripted")  # sources that give ready keypoints (no pose estimator)


class SourceError(ValueError):
    """A source that cannot be opened: a one-line message naming the problem."""


@dataclass
class Frame:
    """One capture. ``image`` is RGB uint8 (H, W, 3), or None when the source gives keypoints."""

    stamp: float  # time.monotonic() at capture
    index: int
    image: np.ndarray | None = None
    keypoints: Keypoints | None = None


@dataclass
class SourceOptions:
    """Options a spec string does not carry. Units: Hz, s."""

    rate: float = 30.0  # Hz, for image: (and the upper bound for camera:)
    realtime: bool = True  # video: at its own frame rate; False = as fast as processed
    loop: bool = False  # video:/mocap: start over at the end
    max_frame_age: float = 0.2  # s, camera frames older than this are dropped
    speed: float = 1.0  # mocap: playback speed (0.5 = half speed), for imitation studies
    extra: dict = field(default_factory=dict)  # source-specific (e.g. a test's camera opener)

    def __post_init__(self) -> None:
        if self.rate is None or not (np.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"SourceOptions.rate must be finite and > 0 Hz, got {self.rate!r}")
        if self.speed is None or not (np.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"SourceOptions.speed must be finite and > 0, got {self.speed!r}")
        if self.max_frame_age is None or not self.max_frame_age > 0:
            raise ValueError(f"SourceOptions.max_frame_age must be > 0 s, got {self.max_frame_age!r}")


class Source(ABC):
    """A paced stream of Frames."""

    spec: str = ""
    rate: float | None = None  # nominal frames per second, when known

    @property
    def healthy(self) -> bool:
        return True

    @property
    def finished(self) -> bool:
        """True once a non-looping file has no more frames."""
        return False

    @abstractmethod
    def read(self, timeout: float = 1.0) -> Frame | None:
        """The next frame, waiting at most ``timeout`` s; None if none is due/available."""

    def close(self) -> None:
        """Release devices and files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Pacer:
    """Sleeps so successive frames go out at ``rate`` Hz without drift."""

    def __init__(self, rate: float):
        self.period = 1.0 / rate
        self.next = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """Sleep until the next slot; False if that is further away than ``timeout``."""
        delay = self.next - time.monotonic()
        if delay > timeout:
            time.sleep(timeout)
            return False
        if delay > 0:
            time.sleep(delay)
        self.next = max(self.next + self.period, time.monotonic() - self.period)
        return True


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``kind:value``; SourceError on anything malformed."""
    if not isinstance(spec, str) or ":" not in spec:
        raise SourceError(f"malformed source {spec!r}: expected one of "
                          + ", ".join(f"{k}:..." for k in KINDS))
    kind, value = spec.split(":", 1)
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r} in {spec!r}: expected one of {', '.join(KINDS)}")
    if not value:
        raise SourceError(f"source {spec!r} is missing its {'device number' if kind == 'camera' else 'path'}")
    return kind, value


def open_source(spec: str, options: SourceOptions | None = None) -> Source:
    """Open a source from its spec. Raises SourceError with a one-line reason."""
    options = options or SourceOptions()
    kind, value = parse_spec(spec)
    if kind == "camera":
        from lam_capture.camera import CameraSource

        try:
            index = int(value)
        except ValueError:
            raise SourceError(f"camera source needs a device number, got {value!r} in {spec!r}") from None
        source = CameraSource(index, options)
    elif kind == "video":
        from lam_capture.video import VideoSource

        source = VideoSource(_existing(value, spec), options)
    elif kind == "image":
        from lam_capture.video import ImageSource

        source = ImageSource(_existing(value, spec), options)
    elif kind == "scripted":
        from lam_capture.scripted import ScriptedSource

        source = ScriptedSource(value, options)
    else:
        from lam_capture.mocap import MocapSource

        source = MocapSource(value, options)
    source.spec = spec
    return source


def _existing(value: str, spec: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise SourceError(f"file not found for source {spec!r}: {path}")
    return path
