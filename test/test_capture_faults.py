"""capture_node with a camera that fails (a fake device: we have no camera here).

The node must stay alive, report the camera unhealthy, publish nothing stale, and recover."""
import time

import cv2
import pytest
from rclpy.parameter import Parameter
from skimage import data

import lam_capture.camera as camera_module
from fake_camera import FakeCamera
from lam_capture.capture_node import CaptureNode
from lam_capture.synthetic import moving_photo
from lam_control.monitor_node import MonitorNode
from lam_control.ros_graph import Graph
from ros_helpers import domain_id
from test_capture_node import KeypointListener


@pytest.fixture
def rig(monkeypatch):
    scene = cv2.cvtColor(next(moving_photo(data.astronaut(), 1)), cv2.COLOR_RGB2BGR)
    fake = FakeCamera(fps=30.0, scene=scene)
    monkeypatch.setattr(camera_module, "_default_opener", fake.opener)
    with Graph(domain_id=domain_id()) as graph:
        node = graph.add(CaptureNode, parameter_overrides=[
            Parameter("source", value="camera:0"), Parameter("hands", value=False),
            Parameter("diagnostics_rate", value=5.0)])
        listener = graph.add(KeypointListener)
        monitor = graph.add(MonitorNode)
        graph.spin(duration=20.0, until=lambda: len(listener.received) > 5)
        assert listener.received, "no keypoints from the healthy fake camera"
        yield graph, fake, node, listener, monitor


def health(monitor):
    entries = [d for _, d in monitor.diagnostics if d["_name"] == "lam capture: source"]
    return entries[-1]["healthy"] if entries else None


@pytest.mark.parametrize("fault", ["unplug", "freeze", "raise"])
def test_camera_fault_is_reported_nothing_stale_is_published_and_it_recovers(rig, fault):
    graph, fake, node, listener, monitor = rig
    start = {"unplug": fake.unplug, "freeze": lambda: fake.freeze(True),
             "raise": lambda: fake.raise_on_read(RuntimeError("USB disconnect"))}[fault]
    stop = {"unplug": fake.replug, "freeze": lambda: fake.freeze(False),
            "raise": lambda: fake.raise_on_read(None)}[fault]
    start()
    faulted_at = time.monotonic()
    graph.spin(duration=3.0, until=lambda: health(monitor) == "False")
    assert health(monitor) == "False", f"{fault}: camera never reported unhealthy"
    graph.spin(duration=1.0)
    # Frames captured before the fault may still be in flight; nothing may come after 0.6 s
    # (a frozen camera is detected after 10 identical frames at 30 fps).
    late = [t for t, _, _ in listener.received if t > faulted_at + 0.6]
    assert not late, f"{fault}: {len(late)} keypoint messages published from a faulty camera"
    assert node._thread.is_alive()

    stop()
    n = len(listener.received)
    graph.spin(duration=10.0, until=lambda: len(listener.received) > n + 5 and health(monitor) == "True")
    assert len(listener.received) > n + 5, f"{fault}: publishing never resumed"
    assert health(monitor) == "True"
    assert camera_module.CameraSource is type(node.pipeline.source)
