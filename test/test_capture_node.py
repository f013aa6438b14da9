"""capture_node through `lam run`, as a user runs it, read by an outside subscriber."""
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from skimage import data

from lam_capture.ros_keypoints import cloud_to_keypoints
from lam_capture.skeleton import BODY, POSE_BONES
from lam_control.resources import share_file
from lam_control.ros_graph import Graph
from ros_helpers import domain_id, stop_process

LAM = [sys.executable, "-m", "lam_control.cli"]


class KeypointListener(Node):
    def __init__(self, **kwargs):
        super().__init__("keypoint_listener", **kwargs)
        self.received = []  # (receipt monotonic, ros receipt time s, msg)
        self.create_subscription(PointCloud2, "/lam/keypoints", self._on, qos_profile_sensor_data)

    def _on(self, msg):
        now = self.get_clock().now().nanoseconds * 1e-9
        self.received.append((time.monotonic(), now, msg))


def run_capture(source, seconds, extra=()):
    proc = subprocess.Popen(LAM + ["run", "--nodes", "capture", "--source", source, "--duration", str(seconds + 15),
                                   *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy())
    try:
        with Graph(domain_id=domain_id()) as graph:
            listener = graph.add(KeypointListener)
            graph.spin(duration=25.0, until=lambda: len(listener.received) > 0)  # model start-up
            assert listener.received, "no keypoints within 25 s: " + (proc.poll() is not None and proc.stdout.read() or "")
            start = len(listener.received)
            graph.spin(duration=seconds)
            return listener.received[start:]
    finally:
        stop_process(proc)


def test_image_source_publishes_plausible_keypoints_at_10hz(tmp_path):
    photo = tmp_path / "person.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    got = run_capture(f"image:{photo}", seconds=5.0)
    times = np.array([t for t, _, _ in got])
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate >= 10.0, f"{rate:.1f} Hz"
    widths = []
    for _, received_at, msg in got:
        assert msg.header.frame_id == BODY.frame_id and msg.width == len(BODY.names)
        kp = cloud_to_keypoints(msg, 0.0)
        assert np.all(np.isfinite(kp.points)) and np.all((kp.confidence >= 0) & (kp.confidence <= 1))
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        assert 0 <= received_at - stamp < 0.5, "header stamp is not the frame's capture time"
        assert kp.valid("left_shoulder") and kp.valid("right_shoulder")
        widths.append(np.linalg.norm(kp.point("left_shoulder") - kp.point("right_shoulder")))
        assert kp.point("left_shoulder")[0] > 0 > kp.point("right_shoulder")[0]
    assert 0.25 <= np.median(widths) <= 0.5


def test_mocap_source_publishes_at_the_clip_rate_with_rigid_bones(tmp_path):
    # The 2.2 s clip loops: a slow discovery on a loaded machine must not outlast it.
    overlay = tmp_path / "loop.yaml"
    overlay.write_text("capture_node:\n  ros__parameters:\n    loop: true\n")
    got = run_capture("mocap:punch", seconds=4.0,
                      extra=["--params", str(share_file("config/capture.yaml")), str(overlay)])
    times = np.array([t for t, _, _ in got])
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate == pytest.approx(30.0, rel=0.15)  # humanoid3d_punch is a 30 Hz clip
    rigid = [k for k, (a, b) in enumerate(POSE_BONES) if {a, b} not in ({11, 23}, {12, 24})]
    lengths = np.array([cloud_to_keypoints(m, 0.0).bone_lengths()[rigid] for _, _, m in got])
    assert np.nanmax(lengths.max(axis=0) - lengths.min(axis=0)) < 0.01


@pytest.mark.parametrize("source, message", [
    ("video:/no/such/clip.mp4", "file not found"),
    ("mocap:moonwalk", "moonwalk"),
    ("webcam", "malformed source"),
    ("camera:front", "device number"),
    ("hologram:3", "unknown source kind"),
])
def test_bad_sources_fail_with_one_line(source, message):
    result = subprocess.run(LAM + ["run", "--nodes", "capture", "--source", source, "--duration", "1"],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_corrupt_video_fails_with_one_line(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(4096))
    result = subprocess.run(LAM + ["run", "--nodes", "capture", "--source", f"video:{bad}", "--duration", "1"],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 2 and "broken.mp4" in result.stderr and "Traceback" not in result.stderr
