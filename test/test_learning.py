"""The whole learning loop at CI scale: 50 scripted demonstrations of `reach` recorded through the
teleop graph (`lam record`), ACT trained on them, closed-loop evaluation on unseen seeds through
the safety filter; the MLP baseline trained on the same data with the same budget.

The goal is >= 90% on unseen seeds, asserted for ACT. Measured with `lam train`'s defaults (ACT
d_model 64, relative actions, the gripper absolute, observing state, object poses and the TCP
feature, state-noise augmentation): 100% / 100% on two sets of 20 unseen seeds after 8000 steps on
a recording where ACT without the augmentation got 85% / 100%, and 100% after 2000 steps on a fresh
recording (`lam bench --learning`). Before the augmentation this test measured 75% in a fresh-clone
CI run (its policies drifted past the marker). The MLP's threshold only guards the baseline."""
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
STEPS = 6000  # measured: ~1000 samples/s at batch 32 on one core -> ~3 min


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
    assert results["act"]["success_rate"] >= 0.9, results["act"]
    assert results["mlp"]["success_rate"] >= 0.6, results["mlp"]  # the baseline ran and learned
