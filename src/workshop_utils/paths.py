"""Where the workshop reads and writes: repository root, data/, outputs/ and the local cache."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


METRICS_FILE = "metrics.json"  # what a finished run of a `workshop` training command leaves in --output-dir

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
    """Locally built assets: the converted SmolLM2, the tests' tiny Llama ($WORKSHOP_CACHE, default ``.cache/``)."""
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


def trainer_checkpoints(folder: os.PathLike | str, complete: bool = False) -> list[Path]:
    """The ``checkpoint-<step>`` folders a Trainer wrote in ``folder``, oldest step first.

    ``complete=True`` keeps only those whose ``trainer_state.json`` exists (the last file a save
    writes), i.e. the ones a run can resume from. A user's ``checkpoint-best`` is never one of them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-[0-9]+", p.name)]
    if complete:
        found = [p for p in found if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def last_checkpoint(folder: os.PathLike | str) -> Path | None:
    """The newest complete ``checkpoint-<step>`` in ``folder`` (what an interrupted run resumes from), or None."""
    found = trainer_checkpoints(folder, complete=True)
    return found[-1] if found else None


def refuse_checkpoint_lookalikes(out: os.PathLike | str) -> None:
    """Stop before training when ``out`` holds a folder the Trainer would take for one of its checkpoints.

    With ``save_total_limit`` set, transformers rotates *every* ``checkpoint-*`` folder in its
    ``output_dir`` (by modification time), so a user's ``checkpoint-best`` would be deleted. Folders named
    ``checkpoint-<step>`` are what a Trainer writes (an earlier or interrupted run) and are left to it.
    """
    from . import WorkshopError

    ours = set(trainer_checkpoints(out))
    for child in sorted(Path(out).glob("checkpoint-*")):
        if child.is_dir() and child not in ours:
            raise WorkshopError(
                f"{display_path(child)}: the Trainer treats every checkpoint-* folder in --output-dir as its own "
                "and may delete it; rename that folder or choose another --output-dir"
            )


def check_output_dir(out: os.PathLike | str, overwrite: bool) -> Path:
    """The checks every ``workshop`` training command makes on ``--output-dir`` before anything slow.

    A file where a folder should be, a finished run (its ``metrics.json``) without ``--overwrite``, and a
    user's folder the Trainer would take for its own checkpoint are refused with one line each.
    """
    from . import WorkshopError

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise WorkshopError(f"{display_path(out)}: --output-dir is a file; give a folder")
    if (out / METRICS_FILE).is_file() and not overwrite:
        raise WorkshopError(f"{display_path(out)} already holds a finished run (metrics.json); "
                            "pass --overwrite to replace it or choose another --output-dir")
    refuse_checkpoint_lookalikes(out)
    return out


def clear_previous_run(out: os.PathLike | str, also: tuple[str, ...] = ()) -> None:
    """``--overwrite``: remove what an earlier run of the command wrote (its checkpoints, ``metrics.json`` and
    the files named in ``also``) and nothing else; an attendee's own files in the folder stay."""
    import shutil

    out = Path(out)
    for stale in [*trainer_checkpoints(out), out / METRICS_FILE, *(out / name for name in also)]:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)


def finish_run(out: os.PathLike | str, record: dict) -> None:
    """End a training command: write ``metrics.json`` (atomically; its presence means "finished"), then drop
    the Trainer's checkpoints, which only an interrupted run needs and which hold pickled optimizer state.

    In that order a crash between the two leaves a finished run with stale checkpoints, which ``--overwrite``
    clears, rather than an unfinished run whose checkpoints are gone.
    """
    import shutil

    out = Path(out)
    write_json_atomic(out / METRICS_FILE, record)
    for checkpoint in trainer_checkpoints(out):
        shutil.rmtree(checkpoint, ignore_errors=True)


def is_main_process() -> bool:
    """True in the one process that prints and writes: rank 0 under ``accelerate launch``/``torchrun`` (``$RANK``,
    else ``$LOCAL_RANK``), and always in a plain run."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def interrupt_after_checkpoint(env_name: str) -> list:
    """The test hook of every training command: Trainer callbacks that, when ``$env_name`` names a step, stop the
    run right after saving that step's checkpoint, as a crash would (the command exits with 130). Empty, and
    nothing changes, when the variable is unset."""
    stop_at = int(os.environ.get(env_name, "0") or 0)
    if not stop_at:
        return []
    import sys

    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= stop_at:
                print(f"[{env_name}] stopping after checkpoint {state.global_step}", file=sys.stderr, flush=True)
                raise KeyboardInterrupt

    return [Interrupt()]


def write_atomic(path: str | os.PathLike, content: str | bytes) -> Path:
    """The workshop's one file writer: ``content`` (text is UTF-8) goes to a temporary file beside ``path``, then
    a rename replaces ``path``, so a crash or a full disk never leaves half a file where a reader (a later notebook,
    a resumed run) expects a whole one. Two writers at once: the last whole file wins. Returns ``path``."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 2, sort_keys: bool = False,
                      ensure_ascii: bool = True, default=None) -> Path:
    """``data`` as indented JSON (one trailing newline), written by :func:`write_atomic`."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=default)
    return write_atomic(path, text + "\n")
