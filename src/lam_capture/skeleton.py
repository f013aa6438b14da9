"""The operator skeleton: landmark order, bones and the body frame every source maps into.

Body frame (ARCHITECTURE.md): metres, origin at the mid-hip, x to the operator's left, y up,
z toward the camera (the operator's forward). One fixed landmark order: MediaPipe Pose's 33,
then 21 for the left hand, then 21 for the right hand. A missing landmark has confidence 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSE_NAMES = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
]
HAND_NAMES = [
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
    "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip",
    "ring_dip", "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
]
POSE_BONES = [(11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24),
              (23, 25), (25, 27), (24, 26), (26, 28), (27, 29), (29, 31), (28, 30), (30, 32),
              (15, 17), (15, 19), (15, 21), (16, 18), (16, 20), (16, 22), (0, 2), (0, 5), (2, 7), (5, 8),
              (9, 10)]
HAND_BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
              (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20)]

LEFT_HAND = 33  # first index of the left hand block
RIGHT_HAND = 54  # first index of the right hand block
NUM_LANDMARKS = 75


@dataclass(frozen=True)
class Skeleton:
    """Names, bones and the frame_id of a landmark set."""

    frame_id: str
    names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"skeleton {self.frame_id} has no landmark {name!r}") from None

    def mirror_permutation(self) -> np.ndarray:
        """Index map that swaps every left landmark with its right twin (for mirrored images)."""
        perm = np.arange(len(self.names))
        for i, name in enumerate(self.names):
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if a in name:
                    perm[i] = self.names.index(name.replace(a, b, 1))
                    break
        return perm


BODY = Skeleton(
    frame_id="lam_body_mediapipe_pose33_hands21x2",
    names=tuple(POSE_NAMES + [f"left_hand_{n}" for n in HAND_NAMES] + [f"right_hand_{n}" for n in HAND_NAMES]),
    bones=tuple(POSE_BONES + [(LEFT_HAND + a, LEFT_HAND + b) for a, b in HAND_BONES]
                + [(RIGHT_HAND + a, RIGHT_HAND + b) for a, b in HAND_BONES]),
)
assert len(BODY.names) == NUM_LANDMARKS


@dataclass
class Keypoints:
    """One frame of operator keypoints in the body frame.

    ``points`` (N, 3) metres, ``confidence`` (N,) in [0, 1]; a landmark with confidence 0 is
    missing and its point is meaningless (never NaN: published messages are NaN-free).
    ``stamp`` is the capture time of the frame (time.monotonic seconds).
    """

    points: np.ndarray  # (N, 3)
    confidence: np.ndarray  # (N,)
    stamp: float
    skeleton: Skeleton = BODY

    def __post_init__(self) -> None:
        n = len(self.skeleton.names)
        self.points = np.asarray(self.points, dtype=float)
        self.confidence = np.asarray(self.confidence, dtype=float)
        if self.points.shape != (n, 3) or self.confidence.shape != (n,):
            raise ValueError(f"keypoints must be ({n}, 3) points and ({n},) confidences for "
                             f"{self.skeleton.frame_id}, got {self.points.shape} and {self.confidence.shape}")

    def point(self, name: str) -> np.ndarray:
        return self.points[self.skeleton.index(name)]

    def valid(self, name: str) -> bool:
        return bool(self.confidence[self.skeleton.index(name)] > 0)

    def bone_lengths(self) -> np.ndarray:
        """Length of every bone (B,); NaN where either end is missing."""
        a, b = np.array(self.skeleton.bones).T
        lengths = np.linalg.norm(self.points[a] - self.points[b], axis=1)
        return np.where((self.confidence[a] > 0) & (self.confidence[b] > 0), lengths, np.nan)


# MediaPipe world landmarks: x to the image's right, y down, z away from the camera. For a
# camera facing the operator (not mirrored) the image's right is the operator's left, so the
# body frame is MediaPipe's rotated 180 degrees about x.
MEDIAPIPE_TO_BODY = np.diag([1.0, -1.0, -1.0])
