"""The tracker's record read back (workshop_utils.tracking): Trainer's own TensorBoard callback writes the
event files, TensorBoard's reader reads them, and the curves come back shaped like ``log_history``."""

from __future__ import annotations

import os
import time

import pytest

from workshop_utils import WorkshopError
from workshop_utils.tracking import as_log_history, latest_run, read_scalars, tracked_history


def _record(output_dir, logs_per_step, monkeypatch):
    """What Trainer does with report_to="tensorboard": its callback, at train begin, at each log, at the end."""
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    args = TrainingArguments(output_dir=str(output_dir), report_to="tensorboard", use_cpu=True)
    callback, state, control = TensorBoardCallback(), TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    for step, logs in logs_per_step:
        state.global_step = step
        callback.on_log(args, state, control, logs=logs)
    callback.on_train_end(args, state, control)
    return callback.logging_dir


def test_curves_come_back_as_the_trainer_logged_them(tmp_path, monkeypatch):
    logged = [(1, {"loss": 0.9, "learning_rate": 1e-4}), (2, {"loss": 0.7}),
              (2, {"eval_loss": 0.8, "eval_accuracy": 0.6}), (4, {"loss": 0.5}), (4, {"eval_loss": 0.75, "eval_accuracy": 0.7})]
    written = _record(tmp_path / "run", logged, monkeypatch)
    run, history = tracked_history(tmp_path / "run")
    assert run == latest_run(tmp_path / "run") and os.path.samefile(run, written)
    assert {"train/loss", "eval/accuracy", "eval/loss"} <= set(read_scalars(run))
    assert [(h["step"], h["loss"]) for h in history if "loss" in h] == [(1, pytest.approx(0.9)), (2, pytest.approx(0.7)),
                                                                        (4, pytest.approx(0.5))]
    assert [h["eval_accuracy"] for h in history if "eval_accuracy" in h] == [pytest.approx(0.6), pytest.approx(0.7)]


def test_the_newest_run_is_the_one_read(tmp_path, monkeypatch):
    first = _record(tmp_path / "run", [(1, {"loss": 2.0})], monkeypatch)
    time.sleep(1.1)  # the callback names a run folder by the second it started
    second = _record(tmp_path / "run", [(1, {"loss": 1.0})], monkeypatch)
    assert not os.path.samefile(first, second)
    run, history = tracked_history(tmp_path / "run")
    assert os.path.samefile(run, second) and history[0]["loss"] == pytest.approx(1.0)


def test_renaming_is_undone_and_other_tags_kept():
    scalars = {"train/loss": [(2, 1.0)], "eval/mean_token_accuracy": [(2, 0.5)], "custom": [(3, 7.0)]}
    assert as_log_history(scalars) == [{"step": 2, "loss": 1.0, "eval_mean_token_accuracy": 0.5}, {"step": 3, "custom": 7.0}]


def test_no_run_is_one_line_saying_how_to_record_one(tmp_path):
    with pytest.raises(WorkshopError, match='report_to="tensorboard"') as err:
        latest_run(tmp_path)
    assert "\n" not in str(err.value)
