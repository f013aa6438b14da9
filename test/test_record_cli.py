"""`lam record` end to end (scripted operator -> capture -> retarget -> safety -> sim, recorded
per episode), then `lam dataset info`, the LeRobot export read back, `lam replay`, and a
recording process killed with SIGKILL mid-episode recovered with all but the last second."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lam_control.replay import read_episode
from lam_policy.dataset import load_dataset
from lam_policy.lerobot_export import read_lerobot

LAM = [sys.executable, "-m", "lam_control.cli"]


def lam(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([*LAM, *args], capture_output=True, text=True, timeout=timeout)


def _json(text: str):
    return json.loads(text[text.index("{"):])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reach")
    proc = lam("record", "--source", "scripted:reach", "--task", "reach", "--episodes", "3", "--seed", "10",
               "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = _json(proc.stdout)
    assert summary["episodes"] == 3 and summary["successes"] >= 2, summary
    return out


def test_record_then_dataset_info(recorded):
    proc = lam("dataset", "info", str(recorded), "--json")
    assert proc.returncode == 0, proc.stderr
    info = _json(proc.stdout)
    assert info["episodes"] == 3 and info["frames"] > 30 and info["skipped"] == []
    assert [e["seed"] for e in info["episode_list"]] == [10, 11, 12]
    assert info["object_count"] == 1 and info["keypoints"] is True
    # The episodes hold what the graph sent: commands within the joint limits, 100 Hz states.
    ep = read_episode(recorded / "episode_000000")
    assert len(ep.messages("/joint_states")) / ep.duration > 80
    assert [e["event"] for e in ep.events][0] == "start" and ep.events[-1]["event"] == "end"


def test_lerobot_export_reads_back_equal(recorded, tmp_path):
    proc = lam("dataset", "export-lerobot", str(recorded), str(tmp_path / "lerobot"))
    assert proc.returncode == 0, proc.stderr
    back = read_lerobot(tmp_path / "lerobot")
    source = load_dataset([recorded])
    assert back["info"]["codebase_version"] == "v3.0" and back["info"]["total_episodes"] == 3
    assert back["info"]["features"]["action"]["names"] == source.joint_names
    for key in ("observation.state", "action", "episode_index", "frame_index"):
        np.testing.assert_array_equal(np.asarray(back["data"][key]), source.arrays[key])


def test_replay_reproduces_the_episode(recorded):
    proc = lam("replay", str(recorded / "episode_000000"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = _json(proc.stdout)
    assert out["joint_error_mean_rad"] < 0.05, out
    if out["recorded_success"]:
        assert out["replay_success"], out


def test_sigkill_mid_episode_loses_at_most_one_second(tmp_path):
    # A walking operator never reaches the marker: the episode runs to its 10 s limit.
    proc = subprocess.Popen([*LAM, "record", "--source", "mocap:walk", "--task", "reach", "--episodes", "2",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    episode = tmp_path / "episode_000000"
    try:
        end = time.monotonic() + 60
        while not episode.exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        assert episode.exists(), "no episode started"
        time.sleep(3.0)
        killed_ns = time.time_ns()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(ValueError, match="recover"):
        read_episode(episode)  # unfinalised: a clear error that says what to do
    rec = lam("dataset", "recover", str(tmp_path), "--json")
    assert rec.returncode == 0, rec.stderr
    ep = read_episode(episode)
    last = max(stamp for msgs in ep.topics.values() for stamp, _ in msgs)
    assert (killed_ns - last) * 1e-9 < 1.0, f"lost {(killed_ns - last) * 1e-9:.2f} s"
    assert len(ep.messages("/joint_states")) > 200  # ~3 s at 100 Hz survived
    assert ep.events[0]["event"] == "start" and ep.events[0]["seed"] == 0
