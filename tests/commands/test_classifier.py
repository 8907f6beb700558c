"""`workshop train-classifier` end to end: training, data parallelism, bad input, overwrite and resume.

The runs use small slices of data/paraphrase written to temporary files (max_length 64), so the whole
file stays within a few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, write
from workshop_utils.commands import cli
from workshop_utils.commands.classifier import CRASH_ENV
from workshop_utils.paths import trainer_checkpoints

HEADER = "label\tsentence1\tsentence2\n"
TRAIN_ROWS, VAL_ROWS, BATCH, EPOCHS = 64, 32, 8, 2
TOTAL_STEPS = -(-TRAIN_ROWS // BATCH) * EPOCHS  # what an uninterrupted run ends on
FAST = ["--max-length", "64", "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--learning-rate", "2e-4"]


def _rows(name: str) -> list[str]:
    lines = (ROOT / "data" / "paraphrase" / name).read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER.strip(), "data/paraphrase changed its header"
    return lines[1:]


def _related_vs_unrelated(rows: list[str], n: int, shift: int) -> list[str]:
    """n pairs, half of them real paraphrases (label 1) and half a sentence with an unrelated partner
    (label 0, the second sentence of another row): a task a small slice can learn in a few steps."""
    pos = [r.split("\t") for r in rows if r.startswith("1\t")][: n]
    half = n // 2
    out = ["\t".join(["1", a, b]) for _, a, b in pos[:half]]
    others = pos[half:n]
    out += ["\t".join(["0", others[i][1], others[(i + shift) % len(others)][2]]) for i in range(len(others))]
    return [out[i // 2] if i % 2 == 0 else out[half + i // 2] for i in range(len(out))]  # interleave labels


@pytest.fixture(scope="module")
def slice_files(tmp_path_factory):
    """Balanced slices built from data/paraphrase rows (so 'always one class' scores 0.5)."""
    folder = tmp_path_factory.mktemp("slice")
    train = _related_vs_unrelated(_rows("train.tsv"), TRAIN_ROWS, shift=7)
    val = _related_vs_unrelated(_rows("validation.tsv"), VAL_ROWS, shift=5)
    return (
        write(folder / "train.tsv", HEADER + "\n".join(train) + "\n"),
        write(folder / "validation.tsv", HEADER + "\n".join(val) + "\n"),
    )


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, WORKSHOP_PROFILE="smoke", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               WORKSHOP_OUTPUTS=str(tmp_path / "outputs"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env.update(extra)
    return env


def _train(tmp_path, train, val, out, *more, env_extra=None, launcher=None, timeout=900):
    cmd = (launcher or [sys.executable, "-m", "workshop_utils.commands.cli"]) + [
        "train-classifier", "--train", str(train), "--validation", str(val), "--output-dir", str(out), *FAST, *more,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path, **(env_extra or {})), capture_output=True, text=True, timeout=timeout)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, slice_files):
    """One uninterrupted run, shared by the tests that inspect or protect a finished run."""
    tmp = tmp_path_factory.mktemp("run")
    out = tmp / "model"
    proc = _train(tmp, *slice_files, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


# --------------------------------------------------------------------------- the happy path
def test_end_to_end_metrics_and_artefacts(finished_run):
    out, proc = finished_run
    m = _metrics(out)
    for key in ("before", "after"):
        assert set(m[key]) >= {"accuracy", "f1"} and all(0.0 <= v <= 1.0 for v in m[key].values())
    assert m["after"]["accuracy"] > m["before"]["accuracy"], m
    assert m["rows"] == {"train": TRAIN_ROWS, "validation": VAL_ROWS}
    assert m["epochs"] == EPOCHS and m["lora"] is False and m["processes"] == 1
    assert m["train_samples_per_second"] > 0 and m["train_seconds"] > 0 and m["peak_memory_bytes"] > 10 * 2**20
    assert m["global_step"] == TOTAL_STEPS and m["resumed_from"] is None
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.json"} <= names
    assert not any(n.endswith(".bin") and n != "training_args.bin" for n in names), names
    assert not any(n.startswith("checkpoint-") for n in names), "checkpoints are removed once the run finished"
    assert "before fine-tuning" in proc.stdout and "after fine-tuning" in proc.stdout


def test_the_run_is_recorded_by_the_tracker(finished_run):
    """The recipe says report_to="tensorboard": the command's run leaves TensorBoard's record beside it, and
    its evaluations are the ones the command reported."""
    from workshop_utils.tracking import tracked_history

    out, _ = finished_run
    run, history = tracked_history(out)
    assert out in run.parents
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h for h in history if "eval_accuracy" in h]
    assert len(losses) >= 2 and all(v > 0 for v in losses)
    assert evals and evals[-1]["step"] <= TOTAL_STEPS
    assert max(h["eval_accuracy"] for h in evals) == pytest.approx(_metrics(out)["after"]["accuracy"], abs=1e-6)


def test_saved_model_loads_and_keeps_label_names(finished_run):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(finished_run[0])
    assert config.num_labels == 2 and set(config.label2id) == {"0", "1"}


def test_metrics_record_training_state_bytes(finished_run):
    """Full fine-tuning holds a gradient and two AdamW moments for every weight (metrics.training_state_bytes)."""
    state = _metrics(finished_run[0])["training_state_bytes"]
    assert set(state) == {"weights", "gradients", "optimizer_state"}
    assert state["gradients"] == state["weights"] > 10 * 2**20, state  # MiniLM in fp32, every weight trains
    assert 2 * state["gradients"] <= state["optimizer_state"] < 2.001 * state["gradients"], state


def test_refuses_to_overwrite_a_finished_run(finished_run, slice_files, tmp_path, capsys):
    out, _ = finished_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    text = (out / "metrics.json").read_text()
    code = cli.main(["train-classifier", "--train", str(slice_files[0]), "--validation", str(slice_files[1]), "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "--overwrite" in err[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before and (out / "metrics.json").read_text() == text


@pytest.mark.parametrize("also", [(), ("before.json",), ("before.json", "pairs.jsonl")], ids=["train-classifier", "sft", "dpo"])
def test_overwrite_removes_only_what_the_command_wrote(also, tmp_path):
    """--overwrite clears the earlier run's checkpoints, metrics and the command's own files; an attendee's stay.

    The three commands share ``paths.clear_previous_run``; each names the extra files it writes."""
    from workshop_utils.paths import clear_previous_run

    out = tmp_path / "run"
    write(out / "checkpoint-6" / "model.safetensors", "x")
    write(out / "metrics.json", "{}")
    for name in also:
        write(out / name, "{}")
    mine = {"my_notes.md": "my notes", "checkpoint-best-by-hand/notes.txt": "kept", "data/train.tsv": "label\n1\n"}
    for name, text in mine.items():
        write(out / name, text)
    clear_previous_run(out, also=also)
    assert not (out / "checkpoint-6").exists() and not (out / "metrics.json").exists()
    assert not any((out / name).exists() for name in also)
    assert {name: (out / name).read_text() for name in mine} == mine

def test_finishing_a_run_writes_metrics_then_drops_only_trainer_checkpoints(tmp_path):
    """The three commands end with ``paths.finish_run``: metrics.json (what "finished" means to a rerun), and
    the Trainer's checkpoint-<step> folders gone; a folder of the attendee's that looks alike stays."""
    import json

    from workshop_utils.paths import METRICS_FILE, check_output_dir, finish_run

    out = tmp_path / "run"
    write(out / "checkpoint-3" / "trainer_state.json", "{}")
    write(out / "checkpoint-6" / "optimizer.pt", "x")  # an incomplete save goes too
    mine = write(out / "checkpoint-best" / "notes.txt", "picked by hand")
    finish_run(out, {"after": {"accuracy": 0.8}})
    assert json.loads((out / METRICS_FILE).read_text()) == {"after": {"accuracy": 0.8}}
    assert not (out / "checkpoint-3").exists() and not (out / "checkpoint-6").exists()
    assert mine.read_text() == "picked by hand"
    with pytest.raises(Exception, match="already holds a finished run"):
        check_output_dir(out, overwrite=False)



@pytest.mark.parametrize("command", ["train-classifier", "sft"])
def test_refuses_a_folder_the_trainer_would_delete(command, tmp_path, capsys, tmp_outputs):
    """transformers rotates every checkpoint-* folder in output_dir: a user's look-alike stops the run first."""
    out = tmp_path / "run"
    mine = write(out / "checkpoint-best" / "notes.txt", "my best model, picked by hand")
    if command == "sft":
        argv = ["sft", "--output-dir", str(out)]
    else:
        train, val = _tsv(tmp_path / "train.tsv", GOOD), _tsv(tmp_path / "validation.tsv", GOOD_VAL)
        argv = ["train-classifier", "--train", str(train), "--validation", str(val), "--output-dir", str(out)]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "checkpoint-best" in err[0] and "rename" in err[0], err
    assert mine.read_text(encoding="utf-8") == "my best model, picked by hand"


def test_single_sentence_text_labels(tmp_path):
    pos = ["a wonderful, warm film", "great acting and a clever plot", "I loved every minute", "a delight from start to end",
           "funny, moving and beautifully shot", "the best film this year", "superb cast, superb story", "charming and smart"]
    neg = ["a dull, lifeless film", "terrible acting and a silly plot", "I hated every minute", "a bore from start to end",
           "clumsy, flat and badly shot", "the worst film this year", "awful cast, awful story", "tedious and stupid"]
    rows = [(t, "positive") for t in pos] + [(t, "negative") for t in neg]
    train = write(tmp_path / "train.csv", "text,label\n" + "".join(f'"{t}",{l}\n' for t, l in rows[::2] + rows[1::2][:4]))
    val = write(tmp_path / "val.csv", "text,label\n" + "".join(f'"{t}",{l}\n' for t, l in rows[1::2][4:]))
    out = tmp_path / "sentiment"
    proc = _train(tmp_path, train, val, out, "--label-names", "negative,positive", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = _metrics(out)
    assert m["text_columns"] == ["text"] and m["label_names"] == ["negative", "positive"]


def test_lora_trains_an_adapter_that_reloads(tmp_path, slice_files, finished_run):
    """`--lora`: a small fraction of the weights train, the adapter (with its head) is saved as
    safetensors, and loading it back on the base model scores what the run recorded."""
    out = tmp_path / "lora"
    # LoRA needs a larger step size than full fine-tuning (the command's default is the profile's x10)
    proc = _train(tmp_path, *slice_files, out, "--lora", "--learning-rate", "2e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m, full = _metrics(out), _metrics(finished_run[0])
    assert m["lora"] is True and "LoRA" in proc.stdout
    assert m["trainable_params"] < full["trainable_params"] / 20, (m["trainable_params"], full["trainable_params"])
    assert m["after"]["accuracy"] > m["before"]["accuracy"], m
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics.json"} <= names, names
    assert "model.safetensors" not in names, "with --lora only the adapter is saved"

    import numpy as np
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workshop_utils.cards import local_copy
    from workshop_utils.data import load_classification_files

    base_id = PeftConfig.from_pretrained(out).base_model_name_or_path
    assert str(ROOT) not in base_id and not base_id.startswith("/"), base_id  # a hub id or a name, never this machine's path
    base = AutoModelForSequenceClassification.from_pretrained(local_copy(base_id, offline=True))
    model = PeftModel.from_pretrained(base, out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    val = load_classification_files({"train": slice_files[0], "validation": slice_files[1]})["validation"]
    with torch.no_grad():
        enc = tok(list(val["sentence1"]), list(val["sentence2"]), truncation=True, max_length=64, padding=True, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1).numpy()
    accuracy = float(np.mean(pred == np.array(val["label"])))
    # padding to the longest row of all (not of each batch) may flip one borderline row, no more
    assert abs(accuracy - m["after"]["accuracy"]) <= 1 / len(pred) + 1e-9, (accuracy, m["after"])


# --------------------------------------------------------------------------- data parallel
def test_accelerate_two_cpu_processes(tmp_path, slice_files, finished_run, accelerate_two_cpu_processes):
    out = tmp_path / "ddp"
    proc = _train(tmp_path, *slice_files, out, "--epochs", "1", launcher=accelerate_two_cpu_processes)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = _metrics(out)
    assert m["processes"] == 2
    assert m["global_step"] == -(-TRAIN_ROWS // (BATCH * 2)), "each step consumes one batch per process"
    # evaluation is gathered across processes: the untrained model scores exactly as in one process
    assert m["before"] == _metrics(finished_run[0])["before"]
    assert proc.stdout.count("before fine-tuning") == 1, "only the main process prints"
    assert (out / "model.safetensors").is_file()


# --------------------------------------------------------------------------- resume
def test_interrupted_run_resumes_to_the_same_step(tmp_path, slice_files, finished_run):
    out = tmp_path / "resume"
    crashed = _train(tmp_path, *slice_files, out, "--save-steps", "6", env_extra={CRASH_ENV: "6"})
    assert crashed.returncode != 0 and not (out / "metrics.json").exists()
    assert [p.name for p in trainer_checkpoints(out, complete=True)] == ["checkpoint-6"]
    resumed = _train(tmp_path, *slice_files, out, "--save-steps", "6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the interrupted run from" in resumed.stdout and "checkpoint-6" in resumed.stdout
    m = _metrics(out)
    assert m["resumed_from"] == "checkpoint-6"
    assert m["global_step"] == _metrics(finished_run[0])["global_step"] == TOTAL_STEPS


# --------------------------------------------------------------------------- bad input
GOOD = [("1", "The cat sat on the mat.", "A cat was sitting on the mat."), ("0", "Prices rose 5%.", "Prices fell 5%.")]
GOOD_VAL = [("1", "It rained all day.", "There was rain all day."), ("0", "He won the race.", "He lost the race.")]


def _tsv(path: Path, rows, header=HEADER) -> Path:
    return write(path, header + "".join("\t".join(r) + "\n" for r in rows))


def _bad_case(tmp_path: Path, case: str) -> tuple[list[str], str]:
    train, val = _tsv(tmp_path / "train.tsv", GOOD), _tsv(tmp_path / "validation.tsv", GOOD_VAL)
    extra: list[str] = []
    expect = ""
    if case == "missing file":
        train, expect = tmp_path / "nope.tsv", "not found"
    elif case == "empty file":
        write(train, ""), None
        expect = "empty"
    elif case == "missing column":
        _tsv(train, [(a, b) for a, b, _ in GOOD], header="label\tsentence1\n")
        extra, expect = ["--text-columns", "sentence1,sentence2"], "missing column 'sentence2'"
    elif case == "unknown label":
        _tsv(val, [("2", "A new sentence.", "Another one.")])
        expect = "label 2"
    elif case == "text labels without names":
        _tsv(train, [("yes", "One line here.", "A second line.")])
        expect = "--label-names"
    elif case == "undecodable bytes":
        write(train, HEADER.encode() + b"1\tcaf\xe9 au lait\tcoffee\n")
        expect = "UTF-8"
    elif case == "duplicate rows across splits":
        _tsv(val, [GOOD[0]])
        expect = "overlap"
    elif case == "jsonl line that is not JSON":
        train = write(tmp_path / "train.jsonl", '{"label": 1, "sentence1": "A b.", "sentence2": "B a."}\n{"label": 0, "sentence1": oops\n')
        expect = "train.jsonl: row 2 (line 2): not valid JSON"
    elif case == "model folder missing":
        extra, expect = ["--model", str(tmp_path / "no-model")], "--model"
    return ["train-classifier", "--train", str(train), "--validation", str(val), "--output-dir", str(tmp_path / "out"), *extra], expect


BAD_CASES = ["missing file", "empty file", "missing column", "unknown label", "text labels without names",
             "undecodable bytes", "duplicate rows across splits", "jsonl line that is not JSON", "model folder missing"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_error_line(tmp_path, tmp_outputs, capsys, case):
    argv, expect = _bad_case(tmp_path, case)
    code = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expect in lines[0], lines[0]
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_bad_input_exit_code_from_a_real_process(tmp_path):
    argv, _ = _bad_case(tmp_path, "unknown label")
    proc = subprocess.run([sys.executable, "-m", "workshop_utils.commands.cli", *argv], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_glue_tsv_with_quotes_passes_validation(tmp_path, capsys, tmp_outputs):
    """Quote characters in GLUE TSV are text: the run gets past the data (and stops at the missing model)."""
    rows = [("1", 'He said "yes" to the deal.', 'The deal got a "yes" from him.'), ("0", '"Stop," she said.', 'She said "go".')]
    train, val = _tsv(tmp_path / "train.tsv", rows), _tsv(tmp_path / "validation.tsv", GOOD_VAL)
    code = cli.main(["train-classifier", "--train", str(train), "--validation", str(val), "--output-dir", str(tmp_path / "o"),
                     "--model", str(tmp_path / "no-model")])
    err = capsys.readouterr().err
    assert code == 2 and "--model" in err and "train.tsv" not in err, err
