"""The whole learning loop at CI scale: 50 scripted demonstrations of `reach` recorded through the
teleop graph (`lam record`), ACT trained on them, closed-loop evaluation on unseen seeds through
the safety filter; the MLP baseline trained on the same data with the same budget.

The product goal is >= 90% on unseen seeds; it is NOT met yet. Measured with this configuration
(small ACT, 4000 steps, 40 eval episodes): ACT 67-90% across variants, MLP 90%. The failures stall
2.7-7 cm from the marker in parts of the target volume that 50 demonstrations cover thinly. The
thresholds below guard the loop against regressions (a broken recorder, dataset or trainer
scores ~0%); raise them to 0.9 when the policy gets there."""
from __future__ import annotations

import logging

import pytest

from lam_control.robot import RobotConfig
from lam_policy.bench_learning import record_demos, small_train_config
from lam_policy.evaluate import EvalConfig, evaluate
from lam_policy.learn_cli import frames_from_folders
from lam_policy.policy_base import load_policy
from lam_policy.train import train

log = logging.getLogger(__name__)
STEPS = 4000  # measured: ~1000 samples/s at batch 32 on one core -> ~2 min


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.usefixtures("one_torch_thread")  # as lam eval and policy_node run it
def test_act_from_50_scripted_reach_demos_succeeds_on_unseen_seeds(tmp_path):
    demos = record_demos(tmp_path / "demos", "reach", episodes=50, seed=0)
    assert demos["episodes"] == 50 and demos["success_rate"] >= 0.9, demos
    frames, report = frames_from_folders([str(tmp_path / "demos")], 30.0)
    assert report["skipped"] == [] and report["used"] >= 45
    results = {}
    for kind in ("act", "mlp"):
        train(frames, tmp_path / kind, small_train_config(STEPS, policy=kind), progress=False)
        policy = load_policy(tmp_path / kind, expected_joint_names=RobotConfig().command_joints, device="cpu")
        results[kind] = evaluate(policy, "reach", EvalConfig(episodes=20, seed=1000))
        log.info("%s: success %.2f, mean time %.2f s, interventions/episode %.0f", kind,
                 results[kind]["success_rate"], results[kind]["mean_episode_time_s"],
                 results[kind]["interventions_per_episode"])
        assert results[kind]["nonfinite_actions"] == 0
    assert results["act"]["success_rate"] >= 0.6, results["act"]
    assert results["mlp"]["success_rate"] >= 0.6, results["mlp"]
