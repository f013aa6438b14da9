"""Find the package's shared files (urdf/, config/, launch/) wherever it is installed.

Three layouts are supported: a colcon/ament install (share/lam via ament_index), a pip install
(data_files land in <prefix>/share/lam), and a source checkout (the repository root).
"""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "lam"
PYBULLET_DATA_PREFIX = "pybullet_data:"


def share_dirs() -> list[Path]:
    """Candidate share directories, most specific first."""
    dirs = [Path(__file__).resolve().parents[2]]  # source checkout: src/lam_control/ -> repo
    try:  # a ROS 2 install; absent in a plain pip environment
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # noqa: BLE001 - not found, or ament_index not installed
        pass
    dirs.append(Path(sys.prefix) / "share" / PACKAGE)
    return dirs


def share_file(relative: str) -> Path:
    """Absolute path of a shared file such as ``urdf/lam_arm.urdf``; FileNotFoundError if absent."""
    for base in share_dirs():
        candidate = base / relative
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in share_dirs())
    raise FileNotFoundError(f"{relative} not found in the lam package share directories ({searched})")


def resolve_urdf(spec: str) -> Path:
    """Resolve a URDF spec: '' (the project's arm), 'pybullet_data:REL', or a file path."""
    if not spec:
        return share_file("urdf/lam_arm.urdf")
    if spec.startswith(PYBULLET_DATA_PREFIX):
        import pybullet_data

        path = Path(pybullet_data.getDataPath()) / spec[len(PYBULLET_DATA_PREFIX):]
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"URDF not found: {spec!r} (resolved to {path})")
    return path.resolve()
