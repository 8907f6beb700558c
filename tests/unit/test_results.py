import json

import pytest

from workshop_utils import DataError, MissingArtifactError
from workshop_utils.results import Results


def test_record_merges_and_survives_reload(tmp_path):
    r = Results(tmp_path / "results.json")
    r.record("01_baseline_evaluation", "classifier", {"accuracy": 0.68})
    r.record("02_full_finetune_trainer", "classifier", {"before": {"accuracy": 0.5, "f1": 0.6}, "after": {"accuracy": 0.9, "f1": 0.92}})
    r.record("01_baseline_evaluation", "llm", {"rougeL": 0.1})
    again = Results(tmp_path / "results.json")
    assert again.get("01_baseline_evaluation", "classifier") == {"accuracy": 0.68}
    assert again.get("01_baseline_evaluation", "llm") == {"rougeL": 0.1}
    pairs = again.before_after_pairs()
    assert {(p["metric"], p["before"], p["after"]) for p in pairs} == {("accuracy", 0.5, 0.9), ("f1", 0.6, 0.92)}


def test_require_names_the_notebook_to_run(tmp_path):
    r = Results(tmp_path / "results.json")
    with pytest.raises(MissingArtifactError) as err:
        r.require("02_full_finetune_trainer", "classifier")
    assert "02_full_finetune_trainer" in str(err.value) and "run" in str(err.value)


def test_numpy_values_are_stored(tmp_path):
    import numpy as np

    r = Results(tmp_path / "results.json")
    r.record("x", "y", {"acc": np.float32(0.5), "m": np.array([[1, 2], [3, 4]])})
    assert json.loads((tmp_path / "results.json").read_text())["x"]["y"] == {"acc": 0.5, "m": [[1, 2], [3, 4]]}


def test_corrupt_record_is_a_one_line_error(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        Results(tmp_path / "results.json").load()


def test_profiles_write_to_separate_folders(monkeypatch, tmp_outputs):
    from workshop_utils.profiles import make_profile

    a = make_profile("smoke", "t", cuda=False, hub=False)
    b = make_profile("offline", "t", cuda=False, hub=False)
    Results.for_profile(a).record("n", "k", 1)
    assert Results.for_profile(b).get("n", "k") is None
    assert Results.for_profile(a).path.parent.name == "smoke"


def test_workshop_errors_render_as_one_line_in_jupyter(tmp_path):
    from workshop_utils.results import require_artifact

    with pytest.raises(MissingArtifactError) as err:
        require_artifact(tmp_path / "classifier", "02_full_finetune_trainer")
    shown = err.value._render_traceback_()
    assert len(shown) == 1 and shown[0].startswith("MissingArtifactError: ")
    assert "run notebooks/02_full_finetune_trainer.ipynb" in shown[0]


def test_json_writer_leaves_the_old_file_whole_when_a_write_fails(tmp_path):
    from workshop_utils.paths import write_json_atomic

    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"accuracy": 0.8})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"accuracy": object()})  # not JSON: fails before anything is replaced
    assert json.loads(path.read_text()) == {"accuracy": 0.8}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "a temporary file was left behind"


def test_one_atomic_writer_for_text_and_bytes(tmp_path, monkeypatch):
    from workshop_utils import paths

    target = tmp_path / "sub" / "pairs.jsonl"
    assert paths.write_atomic(target, "é\n") == target and target.read_text(encoding="utf-8") == "é\n"
    paths.write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"

    def refuse(*_):
        raise OSError("disk full")

    monkeypatch.setattr(paths.os, "replace", refuse)
    with pytest.raises(OSError):
        paths.write_atomic(target, "new")
    assert target.read_bytes() == b"\x00\x01" and [p.name for p in target.parent.iterdir()] == ["pairs.jsonl"]


def test_one_main_process_check(monkeypatch):
    from workshop_utils.paths import is_main_process

    for var in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert is_main_process()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")  # the global rank decides when both are set
    assert is_main_process()


def test_one_crash_hook_stops_after_the_named_checkpoint(monkeypatch):
    from types import SimpleNamespace

    from workshop_utils.paths import interrupt_after_checkpoint

    monkeypatch.delenv("WORKSHOP_TEST_STOP", raising=False)
    assert interrupt_after_checkpoint("WORKSHOP_TEST_STOP") == []
    monkeypatch.setenv("WORKSHOP_TEST_STOP", "2")
    [hook] = interrupt_after_checkpoint("WORKSHOP_TEST_STOP")
    hook.on_save(None, SimpleNamespace(global_step=1), None)  # an earlier checkpoint: training goes on
    with pytest.raises(KeyboardInterrupt):
        hook.on_save(None, SimpleNamespace(global_step=2), None)


def test_one_markdown_table():
    from workshop_utils.tables import markdown_table

    assert markdown_table(("metric", "value"), [("f1", "0.5000"), ("n", 3)]) == (
        "| metric | value |\n|---|---|\n| f1 | 0.5000 |\n| n | 3 |")
