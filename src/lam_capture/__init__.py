"""lam_capture: operator sources, pose estimation, keypoint cleaning and capture_node (issue 3)."""
