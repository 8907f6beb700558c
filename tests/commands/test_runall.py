"""`workshop run-all` on two tiny synthetic notebooks: one passes, one fails."""


import nbformat
import pytest
from conftest import write

from workshop_utils import WorkshopError
from workshop_utils.commands import cli
from workshop_utils.results import Results


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# synthetic")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(
        folder / "01_passes.ipynb",
        "import os\nprint('profile', os.environ['WORKSHOP_PROFILE'])",
        # a displayed PNG, which the summary should pick up as a figure
        "from IPython.display import Image, display\nimport base64\n"
        "display(Image(data=base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')))",
    )
    _notebook(
        folder / "02_fails.ipynb",
        "x = 1",
        "# the broken cell: an artefact an earlier notebook should have made\n"
        "from workshop_utils import demo\ndemo.require('no-such-folder', '02_full_finetune_trainer')",
        "print('never reached')",
    )
    return folder


def _fake_results(tmp_outputs):
    results = Results(tmp_outputs / "smoke" / "results.json")
    results.record("02_full_finetune_trainer", "classifier",
                   {"before": {"accuracy": 0.61, "f1": 0.70}, "after": {"accuracy": 0.83, "f1": 0.88}})
    results.record("03_qlora_llama3_sft", "sft", {"before": {"rougeL": 0.05}, "after": {"rougeL": 0.41}, "route": "x"})
    return results


def test_run_all_names_failing_cell_and_writes_summary(notebooks, tmp_outputs, tmp_path, capsys):
    _fake_results(tmp_outputs)
    out = tmp_path / "report"
    code = cli.main(["run-all", "--notebooks-dir", str(notebooks), "--output-dir", str(out), "--no-progress", "--timeout", "60"])
    err = capsys.readouterr().err
    assert code == 1
    assert "02_fails" in err and "cell 2" in err and "# the broken cell" in err
    assert "MissingArtifactError: no-such-folder is missing: run notebooks/02_full_finetune_trainer.ipynb" in err
    # executed copies of both, the failing one with its traceback stored
    assert (out / "executed" / "01_passes.ipynb").is_file()
    failed = nbformat.read(out / "executed" / "02_fails.ipynb", as_version=4)
    error = failed.cells[2].outputs[-1]
    assert error["output_type"] == "error"
    # the attendee sees one sentence, not a stack trace
    assert len(error["traceback"]) == 1 and "is missing: run" in error["traceback"][0]
    assert not failed.cells[3].get("outputs")  # stopped at the failure
    passed = nbformat.read(out / "executed" / "01_passes.ipynb", as_version=4)
    assert "profile smoke" in passed.cells[1].outputs[0]["text"]

    md = (out / "summary.md").read_text(encoding="utf-8")
    html = (out / "summary.html").read_text(encoding="utf-8")
    for text in (md, html):
        assert "01_passes" in text and "02_fails" in text and "FAILED" in text
        assert "0.610" in text and "0.830" in text and "0.410" in text  # every before/after pair
    assert md.count("| 02_full_finetune_trainer | classifier |") == 2  # accuracy and f1
    assert "data:image/png;base64," in html
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert any(name.startswith("01_passes-cell") for name in figures)  # image from the notebook
    assert "before-after-03_qlora_llama3_sft-sft.png" in figures


def test_run_all_only_and_refuses_to_overwrite(notebooks, tmp_outputs, tmp_path, capsys):
    out = tmp_path / "report"
    code = cli.main(["run-all", "--notebooks-dir", str(notebooks), "--output-dir", str(out), "--only", "01", "--no-progress"])
    assert code == 0
    assert [p.name for p in (out / "executed").iterdir()] == ["01_passes.ipynb"]
    assert "No before/after pairs" in (out / "summary.md").read_text(encoding="utf-8")
    # a second run into the same folder is refused with one line, unless --overwrite
    code = cli.main(["run-all", "--notebooks-dir", str(notebooks), "--output-dir", str(out), "--only", "01", "--no-progress"])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    # the default folder is a fresh timestamped one under outputs/<profile>/run-all
    code = cli.main(["run-all", "--notebooks-dir", str(notebooks), "--only", "1", "--no-progress"])
    assert code == 0
    runs = list((tmp_outputs / "smoke" / "run-all").iterdir())
    assert len(runs) == 1 and (runs[0] / "summary.html").is_file()


def test_select_notebooks_errors(notebooks, tmp_path):
    from workshop_utils.commands.runall import select_notebooks

    assert [p.name for p in select_notebooks(notebooks, ["02,01"])] == ["01_passes.ipynb", "02_fails.ipynb"]
    with pytest.raises(WorkshopError, match="--only 07"):
        select_notebooks(notebooks, ["07"])
    write(tmp_path / "empty" / "README.md", "nothing")
    with pytest.raises(WorkshopError, match="no NN_"):
        select_notebooks(tmp_path / "empty", [])
