"""Every notebook's first code cell installs the workshop on Colab and does nothing anywhere else.

There is no Colab here: the test runs the cell as Colab would meet it (``google.colab`` imported, a fresh
machine with Colab's own packages), with the repository cloned for real from this checkout and pip's commands
recorded, not run. Then pip's resolver, in a stand-in for Colab's environment, shows what the cell's install
would change there: nothing of Colab's kernel, Jupyter server, widgets or torch.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import types
import urllib.error
import urllib.parse
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUN = subprocess.run
# what the cell reads; the tests use this checkout's copies (a clone alone would hold the last commit's)
WORKSHOP_FILES = ("pyproject.toml", "requirements.txt", "requirements-dev.txt", "requirements-nodeps.txt", "constraints.txt")
# Colab's front end, kernel and server, and the developer tools: the cell must never install or pin these
SERVER_AND_KERNEL = ("ipykernel", "ipython", "tornado", "jupyter-server", "jupyter-client", "jupyter-core", "traitlets",
                     "pyzmq", "notebook", "jupyterlab", "google-colab", "ipywidgets", "widgetsnbextension",
                     "jupyterlab-widgets", "nbclient", "nbconvert", "nbformat")
DEVELOPER = ("pytest", "pytest-timeout", "pytest-xdist", "nbval", "jupytext", "nbstripout", "ruff", "playwright")
# Colab's packages at Colab's versions: googlecolab/backend-info, pip-freeze.gpu.txt at commit a724079 (2026-08-19,
# "Upgrade to Python 3.13"); google-colab pins ipykernel, ipython, notebook, tornado, pandas, requests, google-auth,
# portpicker and ipyparallel exactly (googlecolab/colabtools, setup.py). CUDA torch wheels require their own
# triton release (torch 2.14.1 on PyPI: triton~=3.8.0) and torchvision wheels their torch (0.28.0: torch==2.13.0),
# so the stand-in's do too: a lock that moved triton (constraints.txt pins 3.9.0) would make pip replace Colab's torch.
COLAB = {"google-colab": "1.0.0", "ipykernel": "6.17.1", "ipython": "7.34.0", "tornado": "6.5.7",
         "jupyter-server": "2.20.0", "jupyter-client": "7.4.9", "jupyter-core": "5.9.1", "traitlets": "5.7.1",
         "pyzmq": "26.2.1", "notebook": "6.5.7", "ipyparallel": "8.8.0", "ipywidgets": "7.7.1",
         "widgetsnbextension": "3.6.10", "jupyterlab-widgets": "3.0.16", "nbclient": "0.10.4", "nbconvert": "7.17.1",
         "nbformat": "5.11.1", "pandas": "2.2.3", "requests": "2.32.4", "google-auth": "2.49.0", "portpicker": "1.5.2",
         "torch": "2.11.0+cu128", "torchvision": "0.26.0+cu128", "triton": "3.6.0"}
COLAB_REQUIRES = {"torch": "triton~=3.6.0", "torchvision": "torch==2.11.0"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_names(path: Path) -> set[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {norm(line.split("==")[0]) for line in lines if "==" in line}


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


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory):
    """An empty virtual environment holding only Colab's packages (metadata stubs, no code): pip's view of Colab."""
    env = tmp_path_factory.mktemp("colab") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for name, version in COLAB.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        requires = f"Requires-Dist: {COLAB_REQUIRES[name]}\n" if name in COLAB_REQUIRES else ""
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}")
        (info / "INSTALLER").write_text("pip\n")
    return python, site


@pytest.fixture
def on_colab(monkeypatch, tmp_path, colab_env):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("WORKSHOP_HOME", str(tmp_path / "workshop"))
    monkeypatch.setattr(metadata, "distributions", lambda **_: metadata.Distribution.discover(path=[str(colab_env[1])]))
    monkeypatch.chdir(tmp_path)
    calls, real_run = [], subprocess.run

    def run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[0] != "git":
            return subprocess.CompletedProcess(cmd, 0)
        done = real_run(cmd, **kwargs)
        for name in WORKSHOP_FILES:  # this checkout's requirement files, committed or not
            shutil.copy(ROOT / name, Path(cmd[-1]) / name)
        return done

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
    assert pip == [["--quiet", "-r", str(home / ".colab-requirements.txt"), "-c", str(home / ".colab-constraints.txt")],
                   ["--quiet", "--no-deps", "-r", str(home / "requirements-nodeps.txt")],
                   ["--quiet", "--no-deps", "-e", str(home)]]
    calls.clear()  # after the restart: nothing to install, the notebooks folder becomes the working directory
    exec(first_code_cell(NOTEBOOKS[0]), {})
    assert calls == [] and Path.cwd() == home / "notebooks"


def install_on_colab(on_colab) -> Path:
    """Run the cell on the stand-in Colab over this checkout's files (no clone); its pip commands are recorded."""
    home, _ = on_colab
    home.mkdir()
    for name in WORKSHOP_FILES:
        shutil.copy(ROOT / name, home / name)
    with pytest.raises(SystemExit, match="Restart session"):
        exec(first_code_cell(NOTEBOOKS[0]), {})
    return home


def test_on_colab_the_cell_installs_what_the_notebooks_import_and_nothing_of_colabs_own(on_colab):
    never = {*SERVER_AND_KERNEL, *DEVELOPER, "torch"}
    moved = pinned_names(ROOT / "requirements.txt") & {*SERVER_AND_KERNEL, *DEVELOPER}
    assert not moved, f"requirements.txt holds what the notebooks import; pin {sorted(moved)} in requirements-dev.txt"
    home = install_on_colab(on_colab)
    installs = pinned_names(home / ".colab-requirements.txt")
    assert {"transformers", "trl", "peft", "unsloth"} <= installs and not installs & never
    from workshop_utils.envinfo import COLAB_KEEPS  # the version table's list of Colab's own pins

    assert pinned_names(ROOT / "requirements.txt") - installs == set(COLAB_KEEPS)
    assert not pinned_names(home / "requirements-nodeps.txt") & never
    assert not pinned_names(home / ".colab-constraints.txt") & (never | set(COLAB)), "the lock must not pin Colab's own"
    # the other two installs add nothing else: --no-deps, and the package declares no dependencies
    pip = [cmd for cmd in on_colab[1] if "pip" in cmd]
    assert len(pip) == 3 and all("--no-deps" in cmd for cmd in pip[1:])
    assert re.search(r"^dependencies = \[\]", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)


def index_unreachable() -> str | None:
    """Why pip cannot reach its package index (PIP_INDEX_URL, else PyPI), or None when it answers."""
    url = urllib.parse.urlsplit(os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").split()[0])
    probe = f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path.rstrip('/')}/pip/"
    try:
        urllib.request.urlopen(urllib.request.Request(probe, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as exc:
        return f"the package index {probe} cannot be reached ({exc.__class__.__name__})"
    return None


def without_the_index(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must resolve the Colab install against the package index")
    pytest.skip(f"{reason}: the Colab install was not resolved")


def test_pip_resolves_the_colab_install_without_replacing_colabs_kernel_or_torch(on_colab, colab_env, tmp_path):
    home = install_on_colab(on_colab)
    held = tmp_path / "colab-held.txt"  # Colab's versions, which the install must keep
    held.write_text("".join(f"{name}=={version}\n" for name, version in COLAB.items()))
    reason = index_unreachable()
    if reason:
        without_the_index(reason)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "--python", str(colab_env[0]), "install", "--dry-run", "--quiet", "--report",
           str(report), "--retries", "2", "-r", str(home / ".colab-requirements.txt"),
           "-c", str(home / ".colab-constraints.txt"), "-c", str(held)]
    try:
        proc = RUN(cmd, capture_output=True, text=True, timeout=180)  # on_colab only records subprocess.run
    except subprocess.TimeoutExpired:  # pip needs ~20 s of CPU (22-49 s measured): a slow index or a starved CPU
        without_the_index("pip took over 180 s to resolve")
    if proc.returncode:
        network = ("NewConnectionError", "ConnectTimeoutError", "Max retries exceeded", "Could not fetch URL")
        if any(word in proc.stderr for word in network):
            without_the_index("pip lost the package index")
        pytest.fail("pip cannot install the Colab set beside Colab's packages: "
                    + " ".join(line for line in proc.stderr.splitlines() if line.startswith("ERROR"))[-2000:])
    installs = {norm(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    assert {"transformers", "trl", "unsloth"} <= installs, "the report should list the workshop's packages"
    replaced = sorted(installs & {*COLAB, *SERVER_AND_KERNEL, *DEVELOPER, "torch"})
    assert not replaced, f"on Colab the first cell would replace {replaced}"


def test_on_colab_the_version_table_accepts_colabs_torch(monkeypatch):
    from workshop_utils import envinfo

    assert {name: status for name, _, _, status in envinfo.versions()}["torch"] == "ok"
    real = envinfo.metadata.version
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(envinfo.metadata, "version", lambda name: "2.8.0+cu126" if name == "torch" else real(name))
    rows = {name: status for name, _, _, status in envinfo.versions()}
    assert rows["torch"] == "ok (Colab's own)" and rows["transformers"] == "ok"

    def on_colab(name):  # requirements-dev.txt's packages are Colab's own there (ipywidgets 7), or absent
        if name in ("jupyterlab", "torch"):
            raise envinfo.metadata.PackageNotFoundError(name)
        return "7.7.1" if name == "ipywidgets" else real(name)

    monkeypatch.setattr(envinfo.metadata, "version", on_colab)
    rows = {name: status for name, _, _, status in envinfo.versions()}
    assert rows["ipywidgets"] == "ok (Colab's own)" and rows["jupyterlab"] == "ok (not used on Colab)"
    assert rows["torch"] == "MISSING", "the notebooks need torch, Colab's or not"
    monkeypatch.setattr(envinfo.metadata, "version", lambda name: "5.0.0" if name == "transformers" else real(name))
    assert {name: status for name, _, _, status in envinfo.versions()}["transformers"] == "DIFFERS from pin"
