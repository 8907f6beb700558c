import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WORKSHOP_PROFILE", "smoke")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# nbval's items are "notebooks/NAME.ipynb::Cell N"
NBVAL_ITEM = re.compile(r"(?:^|/)notebooks/([^/:]+)\.ipynb::")


class NotebookSeries:
    """The outputs folder the notebooks share as a series, and how each notebook fared under nbval.

    ``pytest tests notebooks --nbval-lax`` first runs ``tests/notebooks/test_rerun.py``, which executes every notebook
    alone and copies what each made into this folder; then nbval executes the series here, so every notebook
    runs a second time over its own earlier outputs (the "twice in a row" standard) without a third execution.
    The folder is a temporary one: the tests never write into the attendee's ``outputs/``.
    """

    def __init__(self) -> None:
        self._folder: Path | None = None
        self.collected: dict[str, int] = {}  # notebook -> nbval items (code cells)
        self.outcomes: dict[str, dict[str, int]] = {}  # notebook -> passed / failed / skipped cells
        self.first_runs: set[str] = set()  # notebooks test_rerun ran once (alone, or after the earlier ones)
        self.record_before_series: dict = {}  # the folder's results.json once every notebook ran once

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="workshop-series-"))
        return self._folder

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            found = NBVAL_ITEM.search(item.nodeid)
            if found:
                self.collected[found.group(1)] = self.collected.get(found.group(1), 0) + 1
        # checks of what the series did run after it
        last = [item for item in items if item.get_closest_marker("after_notebooks")]
        items[:] = [item for item in items if not item.get_closest_marker("after_notebooks")] + last

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        # nbval starts a notebook's kernel while setting up its first cell; the kernel inherits this environment
        if NBVAL_ITEM.search(item.nodeid):
            os.environ["WORKSHOP_OUTPUTS"] = str(self.folder)

    def pytest_runtest_logreport(self, report) -> None:
        found = NBVAL_ITEM.search(report.nodeid)
        if not found:
            return
        counts = self.outcomes.setdefault(found.group(1), {"passed": 0, "failed": 0, "skipped": 0})
        # a cell's own outcome, or an error while starting or stopping the kernel
        if report.when == "call" or report.outcome != "passed":
            counts[report.outcome] += 1

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if self._folder is not None and exitstatus == 0:  # kept after a failure, to look at
            shutil.rmtree(self._folder, ignore_errors=True)


def pytest_configure(config):
    config.pluginmanager.register(NotebookSeries(), "workshop-notebook-series")


@pytest.fixture(scope="session")
def notebook_series(pytestconfig) -> NotebookSeries:
    return pytestconfig.pluginmanager.get_plugin("workshop-notebook-series")


@pytest.fixture
def tmp_outputs(tmp_path, monkeypatch):
    """An empty outputs folder, so tests never touch the attendee's outputs/."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("WORKSHOP_OUTPUTS", str(out))
    return out


@pytest.fixture
def accelerate_two_cpu_processes() -> list[str]:
    """``accelerate launch`` of ``workshop_utils.commands.cli`` in two processes on this machine's CPUs.

    accelerate's ``--cpu`` launcher needs mpirun for several processes; ``--multi_gpu`` starts them with
    torchrun, and without CUDA each process joins a CPU (gloo) process group. The rendezvous gets a port
    nobody listens on now: torchrun's default, 29500, may be taken or in TIME_WAIT.
    """
    port = str(free_port())
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "workshop_utils.commands.cli"]


def free_port() -> int:
    """A local TCP port nobody listens on now (for a server a test starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path
