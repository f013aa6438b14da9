"""EpisodeWriter, recovery and the episode reader on real rosbag2 MCAP folders (no ROS needed)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from episode_factory import JOINTS, joint_state, write_episode
from lam_control.mcap_scan import scan_mcap
from lam_control.recorder import EpisodeWriter, RecoveryError, is_finalised, recover
from lam_control.replay import (EpisodeError, applied_commands, joint_states, keypoints, object_poses,
                                read_episode, requested_commands)

HERE = Path(__file__).parent


def test_round_trip_counts_and_values_exactly(tmp_path):
    path = tmp_path / "episode_000000"
    truth = write_episode(path, duration=1.5, shuffle_names=True, task="push", seed=11)
    ep = read_episode(path)
    for topic, items in truth["written"].items():
        assert len(ep.messages(topic)) == len(items), topic
    stamps, q = joint_states(ep, JOINTS)  # the file lists the joints reversed: matched by name
    assert stamps.tolist() == [s for s, _ in truth["written"]["/joint_states"]]
    assert np.array_equal(q, np.array([v for _, v in truth["written"]["/joint_states"]]))
    _, c = applied_commands(ep, JOINTS)
    assert np.array_equal(c, np.array([v for _, v in truth["written"]["/lam/applied_command"]]))
    _, r = requested_commands(ep, JOINTS)
    assert np.array_equal(r, c)
    _, kp = keypoints(ep)
    assert kp.shape[1:] == (75, 4)
    assert np.array_equal(kp, np.array([v for _, v in truth["written"]["/lam/keypoints"]], dtype=np.float32))
    _, poses = object_poses(ep)
    assert np.array_equal(poses, np.array([v for _, v in truth["written"]["/lam/object_poses"]]))
    assert [e["event"] for e in ep.events] == ["start", "success", "end"]
    assert (ep.start_ns, ep.end_ns) == (truth["t0"], truth["end"])
    assert ep.task == "push" and ep.seed == 11 and ep.success and not ep.discarded
    assert ep.metadata["task"] == "push" and ep.metadata["success"] == "true" and ep.metadata["seed"] == "11"


def test_flushed_to_disk_within_flush_period_of_message_time(tmp_path):
    """What is on disk (complete chunks) is never more than flush_period behind the last write."""
    path = tmp_path / "episode_000000"
    writer = EpisodeWriter(path, flush_period=0.5, background_flush=False)
    mcap = path / "episode_000000.mcap"
    worst = 0.0
    for i in range(250):  # 2.5 s at 100 Hz of message time, written as fast as possible
        ns = 10**18 + i * 10_000_000
        writer.write("/joint_states", ns, joint_state(ns, JOINTS, np.full(len(JOINTS), i * 1e-3)))
        on_disk = [stamp for _, stamp, _ in scan_mcap(mcap.read_bytes()).messages]
        behind = (ns - (max(on_disk) if on_disk else 10**18 - 10_000_000)) * 1e-9
        worst = max(worst, behind)
    writer.close()
    assert worst <= 0.5 + 0.011, worst


def test_quiet_writer_is_flushed_on_wall_time(tmp_path):
    path = tmp_path / "episode_000000"
    writer = EpisodeWriter(path, flush_period=0.2)
    writer.write("/joint_states", 5, joint_state(5, JOINTS, np.zeros(len(JOINTS))))
    time.sleep(0.6)  # no more messages: the background thread must flush
    assert len(scan_mcap((path / "episode_000000.mcap").read_bytes()).messages) == 1
    writer.close()


def test_kill9_loses_at_most_the_last_second(tmp_path):
    path, side = tmp_path / "episode_000000", tmp_path / "stamps.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(HERE / "record_child.py"), str(path), str(side)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = side.read_text().split() if side.exists() else []
            stamps = [int(x) for x in lines if x.isdigit()]
            if stamps and stamps[-1] - stamps[0] >= 3.23e9:  # off the 0.5 s flush phase
                break
            time.sleep(0.05)
        else:
            pytest.fail("recording child did not record 3 s within 60 s")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    written = [int(x) for x in side.read_text().split() if x.isdigit()]
    with pytest.raises(EpisodeError, match="episode_000000.*recover"):
        read_episode(path)
    report = recover(path)
    assert report.action == "recovered" and Path(report.original).exists()
    ep = read_episode(path)
    got = [s for s, _ in ep.messages("/joint_states")]
    lost_s = (written[-1] - got[-1]) * 1e-9
    print(f"\nkill -9 after {(written[-1] - written[0]) * 1e-9:.2f} s at ~100 Hz: kept {len(got)}/{len(written)} "
          f"messages, lost the last {lost_s:.3f} s; {report.bytes_dropped} bytes dropped")
    assert lost_s <= 1.0
    assert got == written[:len(got)]  # a prefix: nothing missing in between
    assert ep.start_ns is not None and ep.task == "reach" and ep.metadata["recovered"] == "true"
    assert not ep.ended and ep.end_ns == got[-1]
    assert recover(path).action == "nothing to do"  # idempotent


def test_recover_a_file_truncated_mid_record(tmp_path):
    path = tmp_path / "episode_000003"
    write_episode(path, duration=2.0)
    full = read_episode(path)
    mcap = path / "episode_000003.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2 + 7])  # cut inside a record
    (path / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")  # old, now wrong metadata
    report = recover(path)
    assert report.bytes_dropped > 0 and report.bytes_kept + report.bytes_dropped == len(data) // 2 + 7
    ep = read_episode(path)
    for topic, n in report.messages.items():
        assert len(ep.messages(topic)) == n
        assert [s for s, _ in ep.messages(topic)] == [s for s, _ in full.messages(topic)][:n]
    assert 0 < sum(report.messages.values()) < sum(len(m) for m in full.topics.values())
    assert report.span_s > 0.5
    assert (path / "episode_000003.mcap.orig").stat().st_size == len(data) // 2 + 7
    assert (path / "metadata.yaml.orig").exists() and is_finalised(path)
    assert recover(path).action == "nothing to do"


def test_recover_refuses_what_is_not_an_mcap(tmp_path):
    path = tmp_path / "episode_000001"
    path.mkdir()
    (path / "episode_000001.mcap").write_bytes(b"not an mcap at all")
    with pytest.raises(RecoveryError, match="episode_000001.*not an MCAP"):
        recover(path)
    with pytest.raises(RecoveryError, match="episode_000002"):
        recover(tmp_path / "episode_000002")


def test_exception_inside_the_context_manager_leaves_a_finalised_bag(tmp_path):
    path = tmp_path / "episode_000000"
    with pytest.raises(RuntimeError, match="operator fell over"):
        with EpisodeWriter(path) as writer:
            writer.event("start", 1_000, episode="episode_000000", task="reach", seed=1)
            for i in range(20):
                writer.write("/joint_states", 2_000 + i, joint_state(2_000 + i, JOINTS, np.zeros(len(JOINTS))))
            raise RuntimeError("operator fell over")
    assert writer.closed and is_finalised(path)
    ep = read_episode(path)
    assert len(ep.messages("/joint_states")) == 20
    assert "RuntimeError: operator fell over" in ep.metadata["error"]


def test_unreadable_episodes_raise_episode_error_naming_the_episode(tmp_path):
    with pytest.raises(EpisodeError, match="episode_000009: no such folder"):
        read_episode(tmp_path / "episode_000009")
    aborted = tmp_path / "episode_000001"
    writer = EpisodeWriter(aborted)
    writer.write("/joint_states", 1, joint_state(1, JOINTS, np.zeros(len(JOINTS))))
    writer.abort()
    with pytest.raises(EpisodeError, match="episode_000001: not finalised.*lam dataset recover"):
        read_episode(aborted)
    truncated = tmp_path / "episode_000002"
    write_episode(truncated, duration=1.0)
    mcap = truncated / "episode_000002.mcap"
    mcap.write_bytes(mcap.read_bytes()[:-100])
    with pytest.raises(EpisodeError, match="episode_000002: truncated or corrupt.*lam dataset recover"):
        read_episode(truncated)
    corrupt = tmp_path / "episode_000003"
    write_episode(corrupt, duration=1.0)
    (corrupt / "metadata.yaml").write_text("{{{ not yaml")
    with pytest.raises(EpisodeError, match="episode_000003: unreadable metadata.yaml"):
        read_episode(corrupt)
    missing = tmp_path / "episode_000004"
    write_episode(missing, duration=1.0)
    (missing / "episode_000004.mcap").unlink()
    with pytest.raises(EpisodeError, match="episode_000004: metadata.yaml but no .mcap"):
        read_episode(missing)


def test_writer_rejects_bad_arguments_by_name(tmp_path):
    with pytest.raises(ValueError, match="flush_period"):
        EpisodeWriter(tmp_path / "a", flush_period=0)
    with pytest.raises(ValueError, match="flush_period"):
        EpisodeWriter(tmp_path / "b", flush_period=None)
    with pytest.raises(ValueError, match="topics.*no_such/msg/Type"):
        EpisodeWriter(tmp_path / "c", topics={"/x": "no_such/msg/Type"})
    with EpisodeWriter(tmp_path / "d") as writer:
        with pytest.raises(ValueError, match="/not_recorded"):
            writer.write("/not_recorded", 1, b"")
        with pytest.raises(ValueError, match="kind.*'begin'"):
            writer.event("begin", 1)
