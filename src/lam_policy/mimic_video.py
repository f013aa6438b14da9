"""The imitation video: the sim arm (as /joint_states reported it) beside the operator skeleton."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from lam_capture.skeleton import Keypoints
from lam_control.robot import RobotConfig

log = logging.getLogger(__name__)


def draw_skeleton(kp: Keypoints, size: tuple[int, int], scale: float = 170.0) -> np.ndarray:
    """The operator as the camera sees them (their left on the image's right), RGB (H, W, 3)."""
    w, h = size
    canvas = np.full((h, w, 3), 245, np.uint8)
    ok = kp.confidence > 0
    uv = np.stack([w / 2 + kp.points[:, 0] * scale, h * 0.62 - kp.points[:, 1] * scale], axis=1).astype(int)
    for a, b in kp.skeleton.bones:
        if ok[a] and ok[b]:
            colour = (230, 90, 30) if "right" in kp.skeleton.names[b] else (40, 110, 220)
            cv2.line(canvas, tuple(uv[a]), tuple(uv[b]), colour, 2, cv2.LINE_AA)
    for p in uv[ok]:
        cv2.circle(canvas, tuple(p), 3, (40, 40, 40), -1, cv2.LINE_AA)
    cv2.putText(canvas, "operator", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (60, 60, 60), 2, cv2.LINE_AA)
    return canvas


def write_mimic_video(robot: RobotConfig, state_times: np.ndarray, states_q: np.ndarray,
                      frame_log: list, clip: list[Keypoints], path: Path, fps: int = 20,
                      size: tuple[int, int] = (480, 360)) -> int:
    """Render side-by-side frames at ``fps`` over the recorded run; returns frames written."""
    import imageio.v2 as imageio

    from lam_control.sim_arm import SimArm

    path.parent.mkdir(parents=True, exist_ok=True)
    log_arr = np.array(frame_log, dtype=float)
    arm = SimArm(robot)
    frames = 0
    try:
        with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=7, macro_block_size=8) as writer:
            for t in np.arange(max(state_times[0], log_arr[0, 1]), min(state_times[-1], log_arr[-1, 1]), 1.0 / fps):
                k = min(int(np.searchsorted(state_times, t)), len(state_times) - 1)
                arm.reset_positions(states_q[k])
                f = max(int(np.searchsorted(log_arr[:, 1], t, side="right")) - 1, 0)
                skeleton = draw_skeleton(clip[int(log_arr[f, 0])], size)
                writer.append_data(np.concatenate([arm.render(*size), skeleton], axis=1))
                frames += 1
    finally:
        arm.close()
    log.info("wrote %d frames to %s", frames, path)
    return frames
