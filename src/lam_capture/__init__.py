"""lam_capture: operator sources, pose estimation, keypoint cleaning and capture_node.

Importing any lam_capture module first caps OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT (see camera.py),
so it is in force before any of our modules imports cv2.
"""
from lam_capture import camera as _camera  # noqa: F401  (side effect: the V4L timeout cap)
