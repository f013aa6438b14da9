"""Export a dataset as LeRobotDataset v3.0 (state-only, no videos), and read one back.

Layout written (the v3.0 layout of huggingface/lerobot ``datasets/utils.py``)::

    OUT/meta/info.json                              codebase_version "v3.0", fps, features, paths
    OUT/meta/stats.json                             min/max/mean/std/count per feature
    OUT/meta/tasks.parquet                          task (pandas index) -> task_index
    OUT/meta/episodes/chunk-000/file-000.parquet    one row per episode: length, tasks,
                                                    dataset_from_index/to_index, data file, stats
    OUT/data/chunk-000/file-000.parquet             one row per frame
    OUT/README.md                                   dataset card naming the repo id

Feature names follow LeRobot: ``observation.state`` and ``action`` carry the joint names in
``names``; task object poses go to ``observation.environment_state`` (LeRobot's ENV feature, which
its policies take as the task state), named ``<object>.<x|y|z|qx|qy|qz|qw>``. Everything is
written with pyarrow; lerobot itself is not needed here.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lam_policy.dataset import Dataset, load_dataset

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
POSE_FIELDS = ("x", "y", "z", "qx", "qy", "qz", "qw")
SOURCE_KEYS = {"observation.environment_state": "observation.object_poses"}  # export name -> dataset name
CARD = """---
license: apache-2.0
task_categories:
- robotics
tags:
- LeRobot
configs:
- config_name: default
  data_files: data/*/*.parquet
---
# {repo_id}

LeRobotDataset v3.0 exported by the LAM stack: {episodes} episodes, {frames} frames at {fps} fps,
state-only (no videos). Joints: {joints}. Tasks: {tasks}.
"""
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _features(ds: Dataset) -> dict:
    j = len(ds.joint_names)
    feats = {
        "observation.state": {"dtype": "float32", "shape": [j], "names": list(ds.joint_names)},
        "action": {"dtype": "float32", "shape": [j], "names": list(ds.joint_names)},
    }
    if ds.object_count:
        names = [f"object_{k}.{f}" for k in range(ds.object_count) for f in POSE_FIELDS]
        feats["observation.environment_state"] = {"dtype": "float32", "shape": [len(names)], "names": names}
    feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_FEATURES[1:]:
        feats[key] = {"dtype": "int64", "shape": [1], "names": None}
    return feats


def _column(values: np.ndarray) -> pa.Array:
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _hf_features(feats: dict) -> dict:
    """The ``huggingface`` schema metadata HF datasets writes, so lerobot reads the right types."""
    out = {}
    for key, ft in feats.items():
        value = {"dtype": ft["dtype"], "_type": "Value"}
        out[key] = value if ft["shape"] == [1] else {"feature": value, "length": ft["shape"][0], "_type": "Sequence"}
    return {"info": {"features": out}}


def _stats(values: np.ndarray) -> dict:
    v = values.reshape(len(values), -1).astype(np.float64)
    return {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
            "std": v.std(0).tolist(), "count": [int(len(v))]}


def export_lerobot(source, out: str | Path, rate: float = 30.0, repo_id: str = "lam/episodes",
                   robot_type: str = "lam_arm", overwrite: bool = False) -> dict:
    """Write a LeRobotDataset v3.0 at ``out`` from a Dataset or dataset folders; returns info.json."""
    ds = source if isinstance(source, Dataset) else load_dataset(source, rate=rate)
    fps = int(round(ds.rate))
    if abs(ds.rate - fps) > 1e-9:
        raise ValueError(f"LeRobot needs an integer fps; dataset rate is {ds.rate} Hz")
    if not ds.episodes:
        raise ValueError(f"nothing to export: no usable episodes (skipped: {ds.skipped})")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"export folder {out} is not empty; choose another or pass overwrite")
        shutil.rmtree(out)
    feats = _features(ds)
    tasks = list(dict.fromkeys(e.task for e in ds.episodes))
    task_of_episode = np.array([tasks.index(e.task) for e in ds.episodes], dtype=np.int64)
    columns = {key: ds.arrays[SOURCE_KEYS.get(key, key)] for key in feats if key != "task_index"}
    columns["task_index"] = task_of_episode[ds.arrays["episode_index"]]
    data = pa.table({key: _column(columns[key]) for key in feats})
    data = data.replace_schema_metadata({"huggingface": json.dumps(_hf_features(feats))})
    _write(data, out / DATA_PATH.format(chunk_index=0, file_index=0))
    _write(_tasks_table(tasks), out / "meta/tasks.parquet")
    _write(_episodes_table(ds, feats, columns, tasks), out / EPISODES_PATH.format(chunk_index=0, file_index=0))
    stats = {key: _stats(columns[key]) for key in feats}
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(ds.episodes),
        "total_frames": len(ds),
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{len(ds.episodes)}"},
        "data_path": DATA_PATH,
        "video_path": None,  # state-only: no camera streams
        "features": feats,
    }
    (out / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    (out / "meta/info.json").write_text(json.dumps(info, indent=4))
    (out / "README.md").write_text(CARD.format(repo_id=repo_id, episodes=len(ds.episodes), frames=len(ds), fps=fps,
                                               joints=", ".join(ds.joint_names), tasks=", ".join(tasks)))
    return info


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _tasks_table(tasks: list[str]) -> pa.Table:
    """Tasks as lerobot writes them with pandas: the task string is the DataFrame index."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                     "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _episodes_table(ds: Dataset, feats: dict, columns: dict, tasks: list[str]) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in (
        "episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
        "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index", "success", "seed",
        "source_episode")}
    for i, ep in enumerate(ds.episodes):
        for key, value in (("episode_index", i), ("tasks", [ep.task]), ("length", ep.frames),
                           ("data/chunk_index", 0), ("data/file_index", 0), ("dataset_from_index", ep.start),
                           ("dataset_to_index", ep.start + ep.frames), ("meta/episodes/chunk_index", 0),
                           ("meta/episodes/file_index", 0), ("success", ep.success),
                           ("seed", -1 if ep.seed is None else ep.seed), ("source_episode", ep.name)):
            rows[key].append(value)
        part = slice(ep.start, ep.start + ep.frames)
        for key in feats:
            for stat, value in _stats(columns[key][part]).items():
                rows.setdefault(f"stats/{key}/{stat}", []).append(value)
    return pa.table(rows)


def read_lerobot(out: str | Path) -> dict:
    """Read an exported dataset back with pyarrow: info, stats, tasks, episodes, data columns."""
    out = Path(out)
    info = json.loads((out / "meta/info.json").read_text())
    stats = json.loads((out / "meta/stats.json").read_text())
    tasks_table = pq.read_table(out / "meta/tasks.parquet")
    tasks = dict(zip(tasks_table["task_index"].to_pylist(), tasks_table["task"].to_pylist()))
    episodes = pq.read_table(out / EPISODES_PATH.format(chunk_index=0, file_index=0)).to_pylist()
    tables = [pq.read_table(p) for p in sorted((out / "data").glob("chunk-*/file-*.parquet"))]
    table = pa.concat_tables(tables)
    data = {}
    for key, ft in info["features"].items():
        col = table[key].combine_chunks()
        if ft["shape"] == [1]:
            data[key] = col.to_numpy(zero_copy_only=False)
        else:
            data[key] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), *ft["shape"])
    return {"info": info, "stats": stats, "tasks": tasks, "episodes": episodes, "data": data}
