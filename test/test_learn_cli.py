"""`lam train` and `lam eval` through the CLI's entry point: what they print (stdout results and
--json, stderr errors) and their exit codes. Real training and a real sim rollout, kept tiny: the
learning itself is test_learning.py's."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lam_control.cli import main
from lam_control.robot import RobotConfig
from lam_policy.frames import Frames, save_frames_npz

ROBOT = RobotConfig()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 5-step ACT run on frames shaped like a reach recording (state + one object pose)."""
    root = tmp_path_factory.mktemp("learn_cli")
    n, rows = len(ROBOT.command_joints), 200
    rng = np.random.default_rng(0)
    home = np.asarray(ROBOT.home_positions(), dtype=float)[:n]
    data = {"observation.state": (home + rng.normal(0, 0.01, (rows, n))).astype(np.float32),
            "observation.object_poses": np.tile([0.4, 0.0, 0.1, 0, 0, 0, 1], (rows, 1)).astype(np.float32),
            "action": (home + rng.normal(0, 0.01, (rows, n))).astype(np.float32),
            "episode_index": np.repeat(np.arange(4), rows // 4)}
    save_frames_npz(root / "reach.npz", Frames(data, ROBOT.command_joints, 30.0))
    return root


@pytest.mark.usefixtures("one_torch_thread")
def test_train_prints_its_summary_and_eval_its_results(checkpoint, capsys):
    run = checkpoint / "run"
    assert main(["train", "--data", str(checkpoint / "reach.npz"), "--out", str(run), "--steps", "5",
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 5 and summary["observation_keys"] == ["observation.state",
                                                                     "observation.object_poses"]
    assert main(["eval", "--checkpoint", str(run), "--task", "reach", "--episodes", "1", "--time-limit", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 1 and result["policy"] == "act" and result["nonfinite_actions"] == 0
    assert "per_episode" not in result
    assert main(["eval", "--checkpoint", str(run), "--task", "reach", "--episodes", "1", "--time-limit", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{run} (act): success ") and "inference p99" in line and len(line.splitlines()) == 1


def test_eval_of_a_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "nope"), "--task", "reach"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "lam eval: error:" in captured.err and "Traceback" not in captured.err
