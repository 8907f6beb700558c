"""Every notebook's first code cell installs the workshop on Colab and does nothing anywhere else.

There is no Colab here: the test runs the cell as Colab would meet it (``google.colab`` imported, a fresh
machine), with the repository cloned for real from this checkout and pip's commands recorded, not run.
"""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def first_code_cell(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "".join(next(cell for cell in cells if cell["cell_type"] == "code")["source"])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_colab_cell(notebook):
    assert first_code_cell(notebook) == first_code_cell(NOTEBOOKS[0])
    assert 'if "google.colab" in sys.modules:' in first_code_cell(notebook)


def test_the_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a} outside Colab"))
    monkeypatch.chdir(tmp_path)
    exec(first_code_cell(NOTEBOOKS[0]), {})
    assert Path.cwd() == tmp_path


@pytest.fixture
def on_colab(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("WORKSHOP_HOME", str(tmp_path / "workshop"))
    monkeypatch.chdir(tmp_path)
    calls, real_run = [], subprocess.run

    def run(cmd, **kwargs):
        calls.append(cmd)
        return real_run(cmd, **kwargs) if cmd[0] == "git" else subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", run)
    return tmp_path / "workshop", calls


def test_without_a_repository_address_the_cell_says_where_to_put_it(on_colab, monkeypatch):
    monkeypatch.delenv("WORKSHOP_REPO_URL", raising=False)
    with pytest.raises(SystemExit) as stop:
        exec(first_code_cell(NOTEBOOKS[0]), {})
    assert "REPO_URL" in str(stop.value) and "\n" not in str(stop.value)


def test_on_colab_it_clones_installs_the_pins_but_torch_then_only_changes_directory(on_colab, monkeypatch):
    home, calls = on_colab
    monkeypatch.setenv("WORKSHOP_REPO_URL", str(ROOT))  # a local clone stands in for the hosted repository
    with pytest.raises(SystemExit) as stop:
        exec(first_code_cell(NOTEBOOKS[0]), {})
    assert "Restart session" in str(stop.value)
    assert (home / "pyproject.toml").is_file() and (home / ".colab-installed").is_file()
    pins = (home / ".colab-requirements.txt").read_text()
    assert "transformers==" in pins and "torch==" not in pins, "Colab's CUDA torch must stay"
    pip = [cmd[cmd.index("install") + 1:] for cmd in calls if "pip" in cmd]
    assert pip == [["--quiet", "-r", str(home / ".colab-requirements.txt"), "-c", str(home / "constraints.txt")],
                   ["--quiet", "--no-deps", "-r", str(home / "requirements-nodeps.txt")],
                   ["--quiet", "--no-deps", "-e", str(home)]]
    calls.clear()  # after the restart: nothing to install, the notebooks folder becomes the working directory
    exec(first_code_cell(NOTEBOOKS[0]), {})
    assert calls == [] and Path.cwd() == home / "notebooks"


def test_on_colab_the_version_table_accepts_colabs_torch(monkeypatch):
    from workshop_utils import envinfo

    assert {name: status for name, _, _, status in envinfo.versions()}["torch"] == "ok"
    real = envinfo.metadata.version
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(envinfo.metadata, "version", lambda name: "2.8.0+cu126" if name == "torch" else real(name))
    rows = {name: status for name, _, _, status in envinfo.versions()}
    assert rows["torch"] == "ok (Colab's build)" and rows["transformers"] == "ok"
    monkeypatch.setattr(envinfo.metadata, "version", lambda name: "5.0.0" if name == "transformers" else real(name))
    assert {name: status for name, _, _, status in envinfo.versions()}["transformers"] == "DIFFERS from pin"
