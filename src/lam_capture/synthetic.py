"""A synthetic video made from a real photograph: the photo moved, rotated and scaled smoothly
frame by frame. Used by the jitter test and `lam bench` (real pixels, known smooth motion)."""
from __future__ import annotations

import math

import cv2
import numpy as np


def moving_photo(photo: np.ndarray, frames: int, size: tuple[int, int] = (640, 480),
                 shift: float = 40.0, angle: float = 4.0, zoom: float = 0.08, period: float = 90.0):
    """Yield ``frames`` RGB images of ``size`` (W, H): the photo centred, then translated by up to
    ``shift`` px, rotated by up to ``angle`` degrees and scaled by up to ±``zoom``, all varying
    sinusoidally with a ``period`` of frames (smooth, like a hand-held camera drifting)."""
    w, h = size
    scale0 = min(w / photo.shape[1], h / photo.shape[0])
    for k in range(frames):
        phase = 2 * math.pi * k / period
        s = scale0 * (1 + zoom * math.sin(phase))
        m = cv2.getRotationMatrix2D((photo.shape[1] / 2, photo.shape[0] / 2), angle * math.sin(0.7 * phase), s)
        m[0, 2] += w / 2 - photo.shape[1] / 2 + shift * math.sin(phase)
        m[1, 2] += h / 2 - photo.shape[0] / 2 + 0.5 * shift * math.cos(phase)
        yield cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(120, 120, 120))
