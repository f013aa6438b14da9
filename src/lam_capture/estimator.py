"""MediaPipe Pose (world landmarks) and Hands, fused into one skeleton in the body frame.

Uses the legacy ``mp.solutions`` API of mediapipe 0.10.21, whose Pose (full/lite) and Hands
models ship inside the wheel: nothing is downloaded at run time.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lam_capture.skeleton import BODY, LEFT_HAND, MEDIAPIPE_TO_BODY, RIGHT_HAND, Keypoints

log = logging.getLogger(__name__)

POSE_LEFT_WRIST, POSE_RIGHT_WRIST = 15, 16


@dataclass
class EstimatorConfig:
    """MediaPipe settings. ``mirrored``: the image is flipped left-right (a selfie view)."""

    model_complexity: int = 1  # 0 = lite, 1 = full (the heavy model is not in the wheel)
    hands: bool = True
    mirrored: bool = False
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    static_image_mode: bool = False  # True runs detection on every frame (unrelated photos)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"EstimatorConfig.{name} must not be None")
        if self.model_complexity not in (0, 1):
            raise ValueError(f"EstimatorConfig.model_complexity must be 0 or 1 (the models in the wheel), "
                             f"got {self.model_complexity!r}")
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"EstimatorConfig.{name} must be in [0, 1], got {value!r}")


@dataclass
class Estimate:
    """Raw estimate: keypoints with MediaPipe's own confidences (not gated yet) and the
    normalised image position (N, 2) of every landmark (NaN where not detected)."""

    keypoints: Keypoints
    image_xy: np.ndarray  # (N, 2) in [0, 1], x to the image's right, y down


class PoseEstimator:
    """Runs Pose (+ Hands) on RGB frames and returns body-frame keypoints."""

    def __init__(self, config: EstimatorConfig | None = None):
        import mediapipe as mp

        self.config = config or EstimatorConfig()
        c = self.config
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=c.static_image_mode, model_complexity=c.model_complexity,
            enable_segmentation=False, min_detection_confidence=c.min_detection_confidence,
            min_tracking_confidence=c.min_tracking_confidence)
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=c.static_image_mode, max_num_hands=2, model_complexity=c.model_complexity,
            min_detection_confidence=c.min_detection_confidence,
            min_tracking_confidence=c.min_tracking_confidence) if c.hands else None
        self._swap = BODY.mirror_permutation()

    def estimate(self, image: np.ndarray, stamp: float) -> Estimate | None:
        """Keypoints for one RGB uint8 (H, W, 3) image; None when no person is found."""
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got "
                             f"{None if image is None else (image.shape, image.dtype)}")
        result = self._pose.process(image)
        if result.pose_world_landmarks is None:
            return None
        n = len(BODY.names)
        world = np.zeros((n, 3))
        conf = np.zeros(n)
        image_xy = np.full((n, 2), np.nan)
        world[:33] = [(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark]
        conf[:33] = [p.visibility for p in result.pose_world_landmarks.landmark]
        image_xy[:33] = [(p.x, p.y) for p in result.pose_landmarks.landmark]
        if self._hands is not None:
            self._add_hands(image, world, conf, image_xy)
        if self.config.mirrored:
            # A mirrored image shows the mirror image of the operator: undo the reflection and
            # the left/right labels it implies.
            world[:, 0] *= -1
            image_xy[:, 0] = 1 - image_xy[:, 0]
            world, conf, image_xy = world[self._swap], conf[self._swap], image_xy[self._swap]
        points = world @ MEDIAPIPE_TO_BODY.T
        return Estimate(Keypoints(points, np.clip(conf, 0, 1), stamp), image_xy)

    def _add_hands(self, image, world, conf, image_xy) -> None:
        """Attach detected hands (in MediaPipe's frame, as seen in the image) at the pose wrists."""
        result = self._hands.process(image)
        if not result.multi_hand_landmarks:
            return
        hands = []
        for lm, wl, handed in zip(result.multi_hand_landmarks, result.multi_hand_world_landmarks,
                                  result.multi_handedness):
            cls = handed.classification[0]
            hands.append((np.array([(p.x, p.y) for p in lm.landmark]),
                          np.array([(p.x, p.y, p.z) for p in wl.landmark]), cls.label, cls.score))
        for block, wrist, xy, hand_world, score in self._assign(hands, image_xy):
            world[block:block + 21] = world[wrist] + (hand_world - hand_world[0])
            conf[block:block + 21] = score
            image_xy[block:block + 21] = xy

    def _assign(self, hands, image_xy):
        """Match hands to the pose's wrists in the image (labels as seen in this image).

        The pose wrists decide; MediaPipe's handedness label (which assumes a mirrored image)
        only breaks a tie when the pose wrists are not usable.
        """
        wrists = {LEFT_HAND: POSE_LEFT_WRIST, RIGHT_HAND: POSE_RIGHT_WRIST}
        # Labels here are as seen in the raw image read as unmirrored (the mirror is undone later
        # for everything at once); MediaPipe's labels assume a mirrored image, hence the swap.
        image_label = {"Left": RIGHT_HAND, "Right": LEFT_HAND}
        taken = {}
        for xy, hand_world, label, score in sorted(hands, key=lambda h: -h[3]):
            dist = {b: float(np.linalg.norm(xy[0] - image_xy[w])) for b, w in wrists.items()
                    if b not in taken and np.all(np.isfinite(image_xy[w]))}
            if not dist:
                continue
            block = min(dist, key=dist.get)
            if len(dist) == 2 and abs(dist[LEFT_HAND] - dist[RIGHT_HAND]) < 0.02:
                block = image_label.get(label, block)
            taken[block] = (wrists[block], xy, hand_world, score)
        return [(b, w, xy, hw, s) for b, (w, xy, hw, s) in taken.items()]

    def close(self) -> None:
        self._pose.close()
        if self._hands is not None:
            self._hands.close()
