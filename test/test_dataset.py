"""Datasets from real episode folders: alignment, skipped/discarded episodes, cache, info, LeRobot v3 export."""
import argparse
import json
import logging
import shutil
import time

import numpy as np
import pytest

from episode_factory import JOINTS, T0, joint_state, true_command, true_poses, true_state, write_episode
from lam_control.recorder import EpisodeWriter, recover
from lam_policy.dataset import info, load_dataset
from lam_control.cli import emit
from lam_policy.dataset_cli import add_dataset_parser
from lam_policy.lerobot_export import export_lerobot, read_lerobot


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """Three good episodes (two successful, two tasks), a killed one, a corrupt one, two discarded."""
    root = tmp_path_factory.mktemp("episodes")
    write_episode(root / "episode_000000", duration=2.0, task="reach", seed=0, success=True, jitter_ns=2_000_000,
                  rng_seed=1)
    write_episode(root / "episode_000001", duration=1.5, task="reach", seed=1, success=False, shuffle_names=True,
                  t0=T0 + 10**10)
    write_episode(root / "episode_000002", duration=1.0, task="push", seed=2, success=True, t0=T0 + 2 * 10**10)
    killed = EpisodeWriter(root / "episode_000003")
    killed.event("start", T0, episode="episode_000003", task="reach", seed=3)
    for i in range(50):  # 0.5 s at 100 Hz
        ns = T0 + i * 10_000_000
        killed.write("/joint_states", ns, joint_state(ns, JOINTS, true_state([i * 0.01])[0]))
        killed.write("/lam/applied_command", ns, joint_state(ns, JOINTS, true_command([i * 0.01])[0]))
    killed.abort()  # left unfinalised, like a killed recorder
    write_episode(root / "episode_000004", duration=1.0)
    (root / "episode_000004" / "metadata.yaml").write_text("{{{ garbage")
    write_episode(root / "discarded" / "episode_000005", duration=1.0)
    with EpisodeWriter(root / "episode_000006") as w:
        w.event("start", T0, episode="episode_000006", task="reach", seed=6)
        w.event("discard", T0 + 10**8)
    return root


def test_alignment_at_a_fixed_rate_matches_the_truth(tmp_path):
    path = tmp_path / "episode_000000"
    truth = write_episode(path, duration=2.0, jitter_ns=2_000_000, objects=3, rng_seed=3)
    ds = load_dataset([tmp_path], rate=30.0, cache=False)
    assert len(ds) == 61 and ds.joint_names == JOINTS
    t = ds["timestamp"].astype(np.float64)
    assert np.allclose(t, np.arange(61) / 30.0, atol=1e-6)
    # state: linear interpolation of 100 Hz samples (jittered by 2 ms) of a smooth motion; outside
    # the first and last sample the state is held, off by at most velocity x gap
    js = np.array([s for s, _ in truth["written"]["/joint_states"]])
    inside = (T0 + t * 1e9 >= js[0]) & (T0 + t * 1e9 <= js[-1])
    err = np.abs(ds["observation.state"] - true_state(t))
    assert inside.sum() >= 59 and err[inside].max() < 1e-3, err[inside].max()
    assert err.max() < 2.5 * 2 * np.pi * 0.9 * 0.4 * 2e-3
    # action: the applied command in force at each frame, exactly (float32)
    cmd = truth["written"]["/lam/applied_command"]
    stamps = np.array([s for s, _ in cmd])
    frame_ns = T0 + np.round(np.arange(61) * 1e9 / 30).astype(np.int64)
    last = np.searchsorted(stamps, frame_ns, side="right") - 1
    expected = np.array([cmd[i][1] if i >= 0 else true_state([f * 1e-9 - T0 * 1e-9])[0]
                         for i, f in zip(last, frame_ns)])
    assert np.abs(ds["action"] - expected).max() < 1e-6
    assert np.abs(ds["action"] - true_command(t)).max() < 0.1  # and close to the leading command itself
    poses = ds["observation.object_poses"].reshape(61, 3, 7)
    assert np.abs(poses - true_poses(t, 3)).max() < 0.1 * (0.1 + 2 * 0.002) + 1e-6  # 10 Hz hold, 0.1 m/s, jitter
    kp = ds["observation.keypoints"].reshape(61, 75, 4)
    kps = truth["written"]["/lam/keypoints"]  # a real mocap clip, held; before the first: confidence 0
    last = np.searchsorted(np.array([s for s, _ in kps]), frame_ns, side="right") - 1
    expected = np.array([kps[i][1] if i >= 0 else np.zeros((75, 4)) for i in last], dtype=np.float32)
    assert np.array_equal(kp, expected) and (last >= 0).sum() >= 60
    assert ds["frame_index"].tolist() == list(range(61)) and set(ds["episode_index"].tolist()) == {0}


def test_bad_episodes_are_reported_by_name_and_skipped(episodes, caplog):
    with caplog.at_level(logging.WARNING):
        ds = load_dataset([episodes], cache=False)
    assert [e.name for e in ds.episodes] == ["episode_000000", "episode_000001", "episode_000002"]
    skipped = dict(ds.skipped)
    assert set(skipped) == {"episode_000003", "episode_000004"}
    assert "not finalised" in skipped["episode_000003"] and "recover" in skipped["episode_000003"]
    assert "metadata.yaml" in skipped["episode_000004"]
    assert "episode_000003" in caplog.text and "episode_000004" in caplog.text
    assert sorted(ds.discarded) == ["episode_000005", "episode_000006"]
    # episode_000001 listed its joints in reverse: columns still match by name
    one = ds.episode_frames(1)
    t = ds["timestamp"][one].astype(np.float64)
    assert np.abs(ds["observation.state"][one] - true_state(t)).max() < 1e-3


def test_cache_hit_gives_equal_arrays_and_follows_file_changes(episodes, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(episodes, root)
    t1 = time.perf_counter()
    first = load_dataset([root])
    t2 = time.perf_counter()
    second = load_dataset([root])
    t3 = time.perf_counter()
    print(f"\nload: {t2 - t1:.3f} s from bags, {t3 - t2:.3f} s from cache ({(t2 - t1) / (t3 - t2):.0f}x)")
    assert first.cache_hits == 0 and first.cache_misses == 6
    assert second.cache_hits == 6 and second.cache_misses == 0
    assert first.arrays.keys() == second.arrays.keys()
    for key in first.arrays:
        assert np.array_equal(first[key], second[key]), key
    assert first.skipped == second.skipped and first.discarded == second.discarded
    assert [e.name for e in first.episodes] == [e.name for e in second.episodes]
    assert (root / ".cache" / "episode_000000.npz").exists()
    recover(root / "episode_000003")  # the files change: that episode is read again, now usable
    third = load_dataset([root])
    assert third.cache_misses == 1 and "episode_000003" in [e.name for e in third.episodes]
    assert third.episodes[3].frames == 15 and not third.episodes[3].ended  # 0.49 s: to its last message
    assert load_dataset([root], rate=10.0).cache_misses == 6  # the rate is part of the key


def test_info_figures(episodes):
    figures = info([episodes], rate=30.0, cache=False)
    assert figures["episodes"] == 3
    assert figures["frames"] == 61 + 46 + 31
    assert figures["success_rate"] == pytest.approx(2 / 3)
    assert figures["total_duration_s"] == pytest.approx(4.5, abs=1e-6)
    assert figures["mean_duration_s"] == pytest.approx(1.5, abs=1e-3)
    assert figures["tasks"] == {"reach": 2, "push": 1}
    assert [s["name"] for s in figures["skipped"]] == ["episode_000003", "episode_000004"]
    assert figures["joint_names"] == JOINTS and figures["object_count"] == 2


def test_lerobot_export_reads_back_frame_by_frame(episodes, tmp_path):
    ds = load_dataset([episodes], cache=False)
    out = tmp_path / "lerobot"
    export_lerobot(ds, out, repo_id="lam/test")
    back = read_lerobot(out)
    info_json, data = back["info"], back["data"]
    assert info_json["codebase_version"] == "v3.0" and info_json["fps"] == 30
    assert info_json["total_episodes"] == 3 and info_json["total_frames"] == len(ds)
    assert info_json["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info_json["splits"] == {"train": "0:3"} and info_json["video_path"] is None
    feats = info_json["features"]
    assert feats["observation.state"]["names"] == JOINTS and feats["action"]["names"] == JOINTS
    assert feats["observation.state"]["shape"] == [len(JOINTS)] and feats["action"]["dtype"] == "float32"
    assert feats["observation.environment_state"]["names"][:2] == ["object_0.x", "object_0.y"]
    for key, source in (("observation.state", "observation.state"), ("action", "action"),
                        ("observation.environment_state", "observation.object_poses"),
                        ("timestamp", "timestamp"), ("frame_index", "frame_index"),
                        ("episode_index", "episode_index"), ("index", "index")):
        assert data[key].shape == ds[source].shape and np.array_equal(data[key], ds[source]), key
    assert back["tasks"] == {0: "reach", 1: "push"}
    assert data["task_index"].tolist() == [0] * (61 + 46) + [1] * 31
    eps = back["episodes"]
    assert [(e["dataset_from_index"], e["dataset_to_index"], e["length"]) for e in eps] == \
        [(0, 61, 61), (61, 107, 46), (107, 138, 31)]
    assert [e["tasks"] for e in eps] == [["reach"], ["reach"], ["push"]]
    assert [e["success"] for e in eps] == [True, False, True]
    assert back["stats"]["action"]["max"] == pytest.approx(ds["action"].max(0).tolist())
    assert back["stats"]["observation.state"]["mean"] == pytest.approx(ds["observation.state"].mean(0).tolist(),
                                                                        abs=1e-6)
    assert eps[1]["stats/action/min"] == pytest.approx(ds["action"][61:107].min(0).tolist())
    with pytest.raises(ValueError, match="not empty"):
        export_lerobot(ds, out)


def test_load_rejects_bad_rate_and_missing_dir(tmp_path):
    with pytest.raises(ValueError, match="rate"):
        load_dataset([tmp_path], rate=0)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset([tmp_path / "nope"])


def _cli(argv):
    parser = argparse.ArgumentParser(prog="lam")
    add_dataset_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return emit(args.func(args))


def test_cli_info_recover_export(episodes, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(episodes, root)
    assert _cli(["dataset", "info", str(root), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["episodes"] == 3
    assert _cli(["dataset", "recover", str(root / "episode_000003"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["episodes"][0]
    assert report["action"] == "recovered" and report["messages"]["/lam/events"] == 1
    assert _cli(["dataset", "recover", str(root)]) == 0  # a garbage metadata.yaml is rebuilt too
    captured = capsys.readouterr()
    assert "episode_000003: nothing to do" in captured.out and "episode_000004: recovered" in captured.out
    (root / "episode_000007").mkdir()
    (root / "episode_000007" / "episode_000007.mcap").write_bytes(b"garbage")
    assert _cli(["dataset", "recover", str(root)]) == 2
    assert "episode_000007: error" in capsys.readouterr().err
    assert _cli(["dataset", "export-lerobot", str(root), str(tmp_path / "out"), "--rate", "15"]) == 0
    assert "v3.0" in capsys.readouterr().out
    assert _cli(["dataset", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
