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


def refuse_checkpoint_lookalikes(out: os.PathLike | str) -> None:
    """Stop before training when ``out`` holds a folder the Trainer would take for one of its checkpoints.

    With ``save_total_limit`` set, transformers rotates *every* ``checkpoint-*`` folder in its
    ``output_dir`` (by modification time), so a user's ``checkpoint-best`` would be deleted. Folders named
    ``checkpoint-<step>`` are what a Trainer writes (an earlier or interrupted run) and are left to it.
    """
    from . import WorkshopError

    folder = Path(out)
    if not folder.is_dir():
        return
    for child in sorted(folder.glob("checkpoint-*")):
        if child.is_dir() and not child.name[len("checkpoint-"):].isdigit():
            raise WorkshopError(
                f"{display_path(child)}: the Trainer treats every checkpoint-* folder in --output-dir as its own "
                "and may delete it; rename that folder or choose another --output-dir"
            )
