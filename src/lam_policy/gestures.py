"""Operator gestures read from keypoints: the pinch that drives the gripper and the deadman."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lam_capture.skeleton import LEFT_HAND, RIGHT_HAND, Keypoints

THUMB_TIP, INDEX_TIP = 4, 8  # offsets inside a 21-point hand block
ENGAGE_MODES = ("always", "gesture", "service")


@dataclass
class GripperConfig:
    """Pinch distance (m) between thumb and index tips -> gripper open/closed, with hysteresis."""

    close_below: float = 0.03  # m: a pinch tighter than this closes the gripper
    open_above: float = 0.05  # m: wider than this opens it again
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        for name in ("close_below", "open_above", "min_confidence"):
            value = getattr(self, name)
            if value is None or not np.isfinite(value) or value < 0:
                raise ValueError(f"GripperConfig.{name} must be finite and >= 0, got {value!r}")
        if self.close_below >= self.open_above:
            raise ValueError(f"GripperConfig.close_below ({self.close_below}) must be below open_above "
                             f"({self.open_above}): that gap is the hysteresis")


class PinchGripper:
    """Open/closed state of the gripper from the driving hand's pinch, with hysteresis."""

    def __init__(self, config: GripperConfig | None = None):
        self.config = config or GripperConfig()
        self.closed = False

    def update(self, kp: Keypoints, hand_block: int) -> bool:
        """New closed state; an unseen hand keeps the last state (never toggles on noise)."""
        thumb, index = hand_block + THUMB_TIP, hand_block + INDEX_TIP
        if min(kp.confidence[thumb], kp.confidence[index]) < self.config.min_confidence:
            return self.closed
        pinch = float(np.linalg.norm(kp.points[thumb] - kp.points[index]))
        if pinch < self.config.close_below:
            self.closed = True
        elif pinch > self.config.open_above:
            self.closed = False
        return self.closed


class Deadman:
    """Whether the operator is engaged.

    ``always``: engaged whenever tracked. ``service``: engaged while set_engaged(True) (the
    /lam/engage service). ``gesture``: engaged while the other hand is raised above the nose for
    ``hold_frames`` consecutive frames; lowering it disengages at once.
    """

    def __init__(self, mode: str = "always", driving_arm: str = "right", hold_frames: int = 3):
        if mode not in ENGAGE_MODES:
            raise ValueError(f"engage mode must be one of {ENGAGE_MODES}, got {mode!r}")
        self.mode, self.hold_frames = mode, hold_frames
        other = "left" if driving_arm == "right" else "right"
        self._other_wrist = 15 if other == "left" else 16
        self._service = False
        self._raised = 0

    def set_engaged(self, engaged: bool) -> None:
        self._service = bool(engaged)

    def update(self, kp: Keypoints) -> bool:
        if self.mode == "always":
            return True
        if self.mode == "service":
            return self._service
        nose, wrist = 0, self._other_wrist
        raised = (min(kp.confidence[nose], kp.confidence[wrist]) > 0
                  and kp.points[wrist][1] > kp.points[nose][1])
        self._raised = self._raised + 1 if raised else 0
        return self._raised >= self.hold_frames


def hand_block(arm: str) -> int:
    return LEFT_HAND if arm == "left" else RIGHT_HAND
