"""Reading back what the experiment tracker recorded.

The configs in notebooks 02, 03 and 05 say ``report_to="tensorboard"``: Trainer's TensorBoard callback writes
event files under ``<output_dir>/runs/<date>_<machine>/``, one folder per training run, with no login and no
network. TensorBoard's own page shows them live (``tensorboard --logdir outputs/``, or ``%tensorboard`` in
JupyterLab); these helpers read the same files back, so a notebook cell can plot the curves from the
tracker's record rather than from the trainer object in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import WorkshopError

EVENTS_GLOB = "events.out.tfevents.*"


def tracked_runs(output_dir: Path | str) -> list[Path]:
    """The folders under ``output_dir`` holding TensorBoard event files, oldest first (by their newest file)."""
    folders = {f.parent for f in Path(output_dir).rglob(EVENTS_GLOB)}
    return sorted(folders, key=lambda d: max(f.stat().st_mtime for f in d.glob(EVENTS_GLOB)))


def latest_run(output_dir: Path | str) -> Path:
    """The newest run folder under ``output_dir``, or a one-line error saying how to record one."""
    runs = tracked_runs(output_dir)
    if not runs:
        raise WorkshopError(f"no TensorBoard run under {output_dir}: train with report_to=\"tensorboard\" "
                            "(pip install tensorboard) and give the same output_dir")
    return runs[-1]


def read_scalars(run_dir: Path | str) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in the run folder's event files (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})  # 0: keep every point
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()[SCALARS]}


def as_log_history(scalars: dict[str, list[tuple[int, float]]]) -> list[dict[str, Any]]:
    """The scalars shaped like ``trainer.state.log_history`` (one dict per step): Trainer's callback wrote
    ``loss`` as ``train/loss`` and ``eval_accuracy`` as ``eval/accuracy``; this undoes that renaming."""
    by_step: dict[int, dict[str, Any]] = {}
    for tag, points in scalars.items():
        group, _, name = tag.partition("/")
        key = {"train": name, "eval": f"eval_{name}"}.get(group, tag)
        for step, value in points:
            by_step.setdefault(step, {"step": step})[key] = value
    return [by_step[step] for step in sorted(by_step)]


def tracked_history(output_dir: Path | str) -> tuple[Path, list[dict[str, Any]]]:
    """The newest run under ``output_dir`` and its curves as a log history (for ``plots.training_curve``)."""
    run = latest_run(output_dir)
    return run, as_log_history(read_scalars(run))
