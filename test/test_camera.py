"""CameraSource against a scripted fake device (test/fake_camera.py): newest-only frames, no stale
frames, recovery from failed reads, freezes, exceptions and a camera absent at start, a prompt
close(), and the V4L2 select timeout set before cv2. Every wait is bounded.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from lam_capture import camera as camera_module  # first: caps the V4L2 select timeout before cv2 loads
from lam_capture.camera import V4L_SELECT_TIMEOUT_ENV, CameraConfig, CameraSource, cap_v4l_select_timeout
from lam_capture.sources import SourceOptions, open_source

from fake_camera import FakeCamera

FAST = dict(backoff_initial=0.02, backoff_max=0.1, stall_timeout=0.3)  # s; recovery in tens of ms


def wait_until(predicate, timeout: float = 2.0, step: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` s pass; its final value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@pytest.fixture
def cameras():
    """Make CameraSources on fake devices; all are closed (and their devices checked released) after."""
    made = []

    def make(fake: FakeCamera, rate: float = 1000.0, max_frame_age: float = 0.2, **extra) -> CameraSource:
        options = SourceOptions(rate=rate, max_frame_age=max_frame_age, extra={"opener": fake.opener, **extra})
        cam = CameraSource(0, options)
        made.append((cam, fake))
        return cam

    yield make
    for cam, fake in made:
        cam.close()
        assert not cam.alive, "capture thread outlived close()"
        assert fake.open_handles == 0, "close() left the device open"


def test_slow_consumer_gets_the_newest_frame_not_a_backlog(cameras):
    fake = FakeCamera(fps=60)
    cam = cameras(fake, max_frame_age=0.5)
    first = cam.read(timeout=2.0)
    assert first is not None and cam.healthy
    assert first.image.shape == (480, 640, 3) and first.image.dtype.name == "uint8"
    assert first.image[0, 0, 0] == 255, "frame was not converted BGR -> RGB"
    stamps, seqs = [first.stamp], [FakeCamera.seq_of(first.image)]
    for _ in range(3):
        time.sleep(0.15)  # ~9 frames arrive meanwhile
        frame = cam.read(timeout=1.0)
        assert frame is not None
        assert time.monotonic() - frame.stamp < 0.1, "a slow consumer got an old frame"
        assert fake.seq - FakeCamera.seq_of(frame.image) <= 2, "not the newest frame"
        stamps.append(frame.stamp)
        seqs.append(FakeCamera.seq_of(frame.image))
    assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps
    assert all(b - a >= 5 for a, b in zip(seqs, seqs[1:])), f"backlog delivered in order: {seqs}"


def test_read_waits_for_a_newer_frame_and_times_out_without_one(cameras):
    fake = FakeCamera(fps=30)
    cam = cameras(fake)
    a, b = cam.read(timeout=2.0), cam.read(timeout=1.0)
    assert a is not None and b is not None and b.index > a.index and b.stamp > a.stamp
    fake.pause()
    cam.read(timeout=0.1)  # may take the last frame captured before the pause
    t0 = time.monotonic()
    assert cam.read(timeout=0.15) is None, "the same frame was returned twice"
    assert 0.1 <= time.monotonic() - t0 < 0.5
    fake.resume()


def test_rate_caps_how_often_frames_are_handed_out(cameras):
    cam = cameras(FakeCamera(fps=100), rate=10.0)
    frames = [cam.read(timeout=1.0) for _ in range(6)]  # as fast as they come
    assert all(f is not None for f in frames)
    gaps = [b.stamp - a.stamp for a, b in zip(frames, frames[1:])]
    assert min(gaps) >= 0.075, gaps  # a quarter period of slack for a camera at exactly `rate`
    assert 0.09 <= (frames[-1].stamp - frames[0].stamp) / len(gaps) <= 0.15, gaps  # 10 Hz on average


def test_consumer_pause_longer_than_max_frame_age_gets_a_fresh_frame(cameras):
    cam = cameras(FakeCamera(fps=30), max_frame_age=0.1)
    old = cam.read(timeout=2.0)
    assert old is not None
    time.sleep(0.3)  # > max_frame_age
    frame = cam.read(timeout=1.0)
    assert frame is not None and frame.index > old.index + 3
    assert time.monotonic() - frame.stamp <= 0.1


def test_stalled_stream_frames_go_stale_and_are_dropped(cameras):
    fake = FakeCamera(fps=30, select_timeout=2.0)
    cam = cameras(fake, max_frame_age=0.1, **FAST)
    assert cam.read(timeout=2.0) is not None
    fake.pause()
    paused_at = time.monotonic()
    time.sleep(0.2)  # the newest frame is now older than max_frame_age
    assert cam.read(timeout=0.2) is None, "a stale frame was returned"
    assert cam.stale_dropped >= 1
    assert wait_until(lambda: not cam.healthy, 1.0) and "no new frame" in cam.health_reason
    fake.resume()
    frame = cam.read(timeout=1.0)
    assert frame is not None and frame.stamp > paused_at + 0.2
    assert wait_until(lambda: cam.healthy, 1.0), cam.health_reason


def test_unplug_makes_it_unhealthy_and_replug_recovers_by_reopening(cameras):
    fake = FakeCamera(fps=60)
    cam = cameras(fake, **FAST)
    assert wait_until(lambda: cam.healthy), cam.health_reason
    fake.unplug()
    assert wait_until(lambda: not cam.healthy, 1.0)
    assert cam.health_reason and cam.read_failures >= 1
    assert wait_until(lambda: cam.open_failures >= 2, 1.0), "no reopen attempts while unplugged"
    cam.read(timeout=0)  # may hand out the last (still fresh) frame from before the unplug
    assert cam.read(timeout=0.3) is None
    fake.replug()
    assert wait_until(lambda: cam.healthy, 1.0), cam.health_reason
    assert cam.reopen_count > 0 and cam.health_reason == ""
    frame = cam.read(timeout=1.0)
    assert frame is not None and time.monotonic() - frame.stamp < 0.2


def test_a_few_failed_reads_recover(cameras):
    fake = FakeCamera(fps=60)
    cam = cameras(fake, **FAST)
    assert cam.read(timeout=2.0) is not None
    fake.fail_reads(3)
    assert wait_until(lambda: cam.read_failures >= 3 and cam.healthy, 2.0), (cam.stats(), cam.health_reason)
    assert cam.read_failures == 3 and cam.reopen_count >= 1
    assert cam.read(timeout=1.0) is not None


def test_frozen_frames_make_it_unhealthy_until_they_change(cameras):
    fake = FakeCamera(fps=60)
    cam = cameras(fake, **FAST)
    assert wait_until(lambda: cam.healthy), cam.health_reason
    fake.freeze()
    assert wait_until(lambda: not cam.healthy, 1.0), "10 identical frames not noticed"
    assert "frozen" in cam.health_reason and cam.frozen_events >= 1
    assert wait_until(lambda: cam.reopen_count >= 1, 1.0), "a frozen device was not reopened"
    time.sleep(0.25)  # > max_frame_age: the last frame before the freeze is stale by now
    assert cam.read(timeout=0.1) is None, "a frame was returned while frozen"
    fake.freeze(False)
    assert wait_until(lambda: cam.healthy, 1.0), cam.health_reason
    assert cam.read(timeout=1.0) is not None


def test_frozen_check_can_be_turned_off(cameras):
    fake = FakeCamera(fps=100)
    cam = cameras(fake, frozen_frames=0, **FAST)
    assert cam.read(timeout=2.0) is not None
    fake.freeze()  # e.g. a virtual camera showing a still picture
    time.sleep(0.3)
    assert cam.healthy and cam.frozen_events == 0


def test_exceptions_from_the_device_never_kill_the_thread(cameras):
    fake = FakeCamera(fps=60)
    cam = cameras(fake, **FAST)
    assert wait_until(lambda: cam.healthy), cam.health_reason
    fake.raise_on_read(OSError("USB transfer error"))
    assert wait_until(lambda: cam.device_errors >= 3, 2.0)
    assert cam.alive and not cam.healthy
    assert "OSError" in cam.health_reason and "USB transfer error" in cam.health_reason
    fake.raise_on_read(None)
    assert wait_until(lambda: cam.healthy, 1.0), cam.health_reason
    assert cam.read(timeout=1.0) is not None and cam.alive


def test_an_opener_that_raises_is_retried(cameras):
    fake, calls = FakeCamera(fps=60), []

    def flaky_opener(index):
        calls.append(index)
        if len(calls) <= 2:
            raise RuntimeError("no such device")
        return fake.opener(index)

    cam = cameras(fake, opener=flaky_opener, **FAST)
    assert cam.read(timeout=2.0) is not None
    assert calls[:3] == [0, 0, 0] and cam.device_errors == 2 and cam.open_failures == 2


def test_camera_absent_at_start_is_not_fatal_and_opens_later(cameras):
    fake = FakeCamera(fps=60)
    fake.unplug()
    cam = cameras(fake, **FAST)  # must not raise
    assert wait_until(lambda: cam.open_failures >= 2, 1.0)
    assert not cam.healthy and "could not be opened" in cam.health_reason
    assert cam.read(timeout=0.1) is None
    fake.replug()
    frame = cam.read(timeout=1.0)
    assert frame is not None and cam.healthy
    assert cam.reopen_count == 0, "the first successful open is not a reopen"


def test_close_is_prompt_even_while_the_device_is_failing(cameras):
    fake = FakeCamera(fps=30)
    fake.unplug()
    cam = cameras(fake, backoff_initial=0.5, backoff_max=2.0)  # real back-off: waits up to 2 s
    assert wait_until(lambda: cam.open_failures >= 2, 2.0)
    t0 = time.monotonic()
    cam.close()
    assert time.monotonic() - t0 < 1.0
    assert not cam.alive and fake.open_handles == 0
    assert not cam.healthy and cam.health_reason == "closed"
    t0 = time.monotonic()
    assert cam.read(timeout=1.0) is None and time.monotonic() - t0 < 0.1, "read after close() waited"
    cam.close()  # twice is fine


def test_close_while_streaming_releases_the_device(cameras):
    fake = FakeCamera(fps=30)
    cam = cameras(fake)
    assert cam.read(timeout=2.0) is not None and fake.open_handles == 1
    t0 = time.monotonic()
    cam.close()
    assert time.monotonic() - t0 < 1.0 and not cam.alive and fake.open_handles == 0


def test_open_source_builds_a_camera_from_its_spec(cameras):
    fake = FakeCamera(fps=30)
    with open_source("camera:3", SourceOptions(extra={"opener": fake.opener})) as cam:
        assert isinstance(cam, CameraSource) and cam.spec == "camera:3" and cam.rate == 30.0
        assert cam.read(timeout=2.0) is not None
        assert fake.handles[0].index == 3
    assert not cam.alive and fake.open_handles == 0


@pytest.mark.parametrize("field, value", [
    ("backoff_initial", 0.0), ("backoff_initial", None), ("backoff_max", 0.01), ("stall_timeout", float("inf")),
    ("join_timeout", -1.0), ("frozen_frames", 1), ("frozen_frames", -3), ("frozen_frames", 2.5),
    ("opener", "cv2.VideoCapture"),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        CameraConfig(**{field: value})


def test_unknown_extra_keys_are_ignored_with_a_warning(caplog):
    config = CameraConfig.from_extra({"backoff_max": 1.0, "bakoff_initial": 0.5})
    assert config.backoff_max == 1.0 and config.backoff_initial == 0.1
    assert "bakoff_initial" in caplog.text


# ---- the V4L2 select timeout (whole seconds: tv.tv_sec in OpenCV's cap_v4l.cpp, default 10) ----

def test_select_timeout_is_capped_in_this_process():
    value = int(os.environ[V4L_SELECT_TIMEOUT_ENV])
    assert 1 <= value <= 2  # seconds (so also <= 2000 if anyone reads it as ms)
    assert camera_module.load_cv2() is camera_module.cv2


@pytest.mark.parametrize("raw, expected", [
    (None, "2"), ("10", "2"), ("2000", "2"), ("0", "2"), ("-1", "2"), ("2s", "2"), ("", "2"),
    ("1", "1"), (" 2 ", " 2 "),
])
def test_cap_v4l_select_timeout(raw, expected):
    env = {} if raw is None else {V4L_SELECT_TIMEOUT_ENV: raw}
    cap_v4l_select_timeout(env)
    assert env[V4L_SELECT_TIMEOUT_ENV] == expected


def test_select_timeout_is_set_before_cv2_is_imported():
    """In a fresh process: at the moment cv2 is first imported, the variable is already capped."""
    script = textwrap.dedent(f"""
        import importlib.abc, os, sys
        seen = []
        class Spy(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "cv2" and not seen:
                    seen.append(os.environ.get({V4L_SELECT_TIMEOUT_ENV!r}))
                return None
        sys.meta_path.insert(0, Spy())
        import lam_capture.camera
        print(seen[0], os.environ[{V4L_SELECT_TIMEOUT_ENV!r}])
    """)
    env = {**os.environ, V4L_SELECT_TIMEOUT_ENV: "30"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]
