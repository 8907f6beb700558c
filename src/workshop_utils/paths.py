"""Where the workshop reads and writes: repository root, data/, outputs/ and the local cache."""

from __future__ import annotations

import os
from pathlib import Path


def _looks_like_root(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "src" / "workshop_utils").is_dir()


def repo_root() -> Path:
    """The repository root: $WORKSHOP_ROOT, else the nearest parent of the cwd or of this file."""
    env = os.environ.get("WORKSHOP_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for candidate in (start, *start.parents):
            if _looks_like_root(candidate):
                return candidate
    return Path.cwd().resolve()


def data_dir() -> Path:
    """The datasets the project ships (``data/``)."""
    return repo_root() / "data"


def cache_dir() -> Path:
    """Locally built assets such as the tiny Llama ($WORKSHOP_CACHE, default ``.cache/``)."""
    env = os.environ.get("WORKSHOP_CACHE")
    path = Path(env).expanduser() if env else repo_root() / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def outputs_root() -> Path:
    """Root of everything the notebooks write ($WORKSHOP_OUTPUTS, default ``outputs/``)."""
    env = os.environ.get("WORKSHOP_OUTPUTS")
    return Path(env).expanduser() if env else repo_root() / "outputs"


def outputs_dir(profile_name: str) -> Path:
    """One folder per profile, so a smoke run never mixes its numbers with a real run's."""
    path = outputs_root() / profile_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: os.PathLike | str) -> str:
    """A path relative to the repository when it is inside it (keeps machine paths out of outputs)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(repo_root()))
    except ValueError:
        return str(p)
