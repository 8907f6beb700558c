"""The workshop as attendees see it: JupyterLab in a real headless Chromium, driven through its menus.

Everything else executes notebooks headless (nbclient, nbval) and calls the demos' callbacks directly, so a
missing widget extension, a kernel from another environment, a demo that does not render or a profile
table printed as a wall of text would all pass there. Here JupyterLab starts as ``make workshop`` starts
it (``workshop_utils.commands.lab.lab_command``: the project's interpreter, token authentication on; only the port
is chosen free), on a copy of the notebooks so nothing is saved into the repository, and Chromium:

1. opens ``00_setup``, runs every cell with *Run → Run All Cells*, and reads the profile table, the
   kernel's environment and the self-check from the rendered page;
2. opens ``04_inference_pipeline`` over the series' outputs (``make test`` runs this after nbval; alone,
   the test first makes 02's and 03's outputs), runs it, types into both live demos, clicks their
   buttons and reads the answers from the page.

A screenshot of each step goes to ``build/browser-test/``; a failed step says which step failed and what
the page showed. Needs Chromium (``apt-get install chromium``) and the ``playwright`` package (pinned in
requirements-dev.txt; it drives the system Chromium and downloads no browser). Without Chromium the test is
skipped with one line saying how to install it; under CI (``CI`` set) that is a failure instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from test_rerun import execute

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "browser-test"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# what the probe of this machine kind found necessary for a headless Chromium as root with no network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_ALL_TIMEOUT = {"00_setup": 300, "04_inference_pipeline": 900}  # seconds, smoke profile on 2 cores

pytestmark = [pytest.mark.after_notebooks, pytest.mark.timeout(2400)]


def chromium_or_skip() -> str:
    missing, exe = [], next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    if exe is None:
        missing.append("Chromium (sudo apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (make setup installs it)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; under CI this is a failure, not a skip (.ci/run installs Chromium)")
        pytest.skip(message)
    return exe


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class LabServer:
    """``lab_command`` serving a copy of notebooks/, the way ``make workshop`` serves the original."""

    def __init__(self, outputs: Path, workdir: Path):
        from workshop_utils.commands.lab import lab_command

        self.port, self.token = free_port(), secrets.token_hex(24)
        self.root = workdir / "notebooks"
        self.root.mkdir(parents=True)
        for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
            shutil.copy2(notebook, self.root / notebook.name)
        self.log = workdir / "jupyterlab.log"
        env = dict(os.environ, JUPYTER_TOKEN=self.token, WORKSHOP_OUTPUTS=str(outputs), WORKSHOP_ROOT=str(ROOT),
                   JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"),  # no tabs restored from an earlier session
                   WORKSHOP_PROFILE="smoke", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(lab_command(self.root, port=self.port, open_browser=False),
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if http_status(f"{self.base}/api/status?token={self.token}") == 200:
                    return
            time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer on port {self.port} within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").replace(self.token, "<token>")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Browser:
    """One Chromium page on the Lab, with the steps an attendee takes."""

    def __init__(self, page, lab: LabServer):
        self.page, self.lab = page, lab
        SHOTS.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def step(self, name: str):
        try:
            yield
        except Exception as exc:
            shot = self.screenshot(f"FAILED-{name}")
            raise AssertionError(f"browser step '{name}' failed: {exc}\n"
                                 f"the page showed: ...{self.visible_text()[-1500:]}\nscreenshot: {shot}") from None
        self.screenshot(name)

    def screenshot(self, name: str) -> Path:
        path = SHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path))
        return path

    def visible_text(self) -> str:
        with contextlib.suppress(Exception):
            return re.sub(r"\s+", " ", self.page.locator(".jp-NotebookPanel:visible .jp-Notebook").inner_text())
        return "(nothing readable)"

    def kernel_state(self) -> str:
        return self.page.locator("#jp-main-statusbar").text_content() or ""

    def open(self, notebook: str) -> None:
        """Open ``notebook`` in a workspace of its own, so JupyterLab restores no tab from the previous step.

        With the default workspace, the notebook of the previous test comes back as a tab beside this one, and
        which of the two *Run All Cells* acts on depends on the order the restore finished in.
        """
        self.page.goto(f"{self.lab.base}/lab/workspaces/{notebook}/tree/{notebook}.ipynb?reset&token={self.lab.token}")
        self.page.locator(".jp-NotebookPanel:visible .jp-Cell").first.wait_for(timeout=90_000)
        self.wait_for(lambda: "Idle" in self.kernel_state(), 120, "the kernel never became idle")
        assert self.page.locator(".jp-NotebookPanel:visible .jp-CodeCell").count() > 0, "no code cells rendered"
        tabs = self.page.locator(".jp-NotebookPanel").count()
        assert tabs == 1, f"{tabs} notebooks are open; this step expects {notebook} alone"

    def prompts(self) -> list[str]:
        locator = self.page.locator(".jp-NotebookPanel:visible .jp-CodeCell .jp-InputPrompt:not(.jp-Placeholder-prompt)")
        return [text.strip() for text in locator.all_text_contents()]

    def run_all(self, timeout: float) -> None:
        """Click into the notebook, *Run → Run All Cells*, then wait until every code cell ran or one failed."""
        # an attendee clicks into the notebook first; the click also makes it the notebook the Run menu acts on
        self.page.locator(".jp-NotebookPanel:visible .jp-Cell .jp-InputPrompt").first.click()
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        started = time.monotonic()
        deadline, idle_since = started + timeout, None
        while time.monotonic() < deadline:
            texts = self.prompts()
            if not any(re.fullmatch(r"\[(\d+|\*)\]:", t) for t in texts) and time.monotonic() - started > 30:
                raise AssertionError(f"Run All Cells started no cell within 30 s (kernel: {self.kernel_state()!r}; "
                                     f"dialogs: {self.dialogs()}); JupyterLab's log: {self.lab.log_tail(8)}")
            busy = any(t == "[*]:" for t in texts) or "Idle" not in self.kernel_state()
            idle_since = None if busy else (idle_since or time.monotonic())
            # the kernel stays busy while Run All's queue lasts (collapsed cells show no prompt to read), so
            # done means: every prompt shown has a number and the kernel has been idle for a few seconds
            if texts and all(re.fullmatch(r"\[\d+\]:", t) for t in texts) and idle_since and time.monotonic() - idle_since > 3:
                return
            if idle_since and time.monotonic() - idle_since > 10 and any(t != "[ ]:" for t in texts):
                # idle with cells left after some ran: a cell failed
                error = self.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                shown = error.last.text_content() if error.count() else "no error output"
                ran = sum(bool(re.fullmatch(r"\[\d+\]:", t)) for t in texts)
                raise AssertionError(f"{ran} of {len(texts)} code cells ran; last error output: {shown[-800:]}")
            time.sleep(1)
        raise AssertionError(f"the cells had not finished after {timeout:.0f} s")

    def dialogs(self) -> list[str]:
        return [re.sub(r"\s+", " ", text) for text in self.page.locator(".jp-Dialog:visible").all_text_contents()]

    def wait_for(self, condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(message)

    def code_cell(self, showing: str):
        """The notebook's code cell whose code contains ``showing``."""
        return self.page.locator(".jp-NotebookPanel:visible .jp-CodeCell").filter(
            has=self.page.locator(".jp-InputArea", has_text=showing)).first

    def output_text(self, showing: str) -> str:
        """The rendered output of the code cell whose code contains ``showing``."""
        return re.sub(r"\s+", " ", self.code_cell(showing).locator(".jp-OutputArea").text_content() or "")

    def demo_box(self, title: str):
        """The live demo titled ``title``, scrolled into view."""
        box = self.page.locator(".widget-vbox", has_text=title)
        if box.count() == 0:
            as_text = self.page.get_by_text(re.compile(r"VBox\(children=")).count()
            raise AssertionError(f"the demo '{title}' did not render as a widget" + (
                " (the page shows its text form, VBox(children=...): is jupyterlab_widgets installed in .venv?)"
                if as_text else ""))
        box.first.scroll_into_view_if_needed()
        return box.first

    def demo(self, title: str, text: str, button: str, timeout: float = 300) -> str:
        """Type ``text`` into the live demo titled ``title``, click ``button``, return what it answered."""
        box = self.demo_box(title)
        box.locator("textarea").fill(text)
        answer = box.locator(".widget-output")
        box.get_by_role("button", name=button).click()
        self.wait_for(lambda: (answer.text_content() or "").strip(), timeout, f"'{title}' showed no answer in {timeout} s")
        return (answer.text_content() or "").strip()

    def chat(self, title: str, text: str, done: str, timeout: float = 300) -> tuple[list[str], str]:
        """Type ``text`` into the chat demo titled ``title`` and click Send; read its answer while it is
        written, until ``done`` shows under it. Returns the differing texts seen before that, and the last."""
        box = self.demo_box(title)
        box.locator("textarea").fill(text)
        answer = box.locator(".chat-answer")
        box.get_by_role("button", name="Send").click()
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = re.sub(r"\s+", " ", answer.inner_text()).strip()
            if done in current or re.match(r"\w+(Error|Exception): ", current):
                return seen, current
            if current and (not seen or current != seen[-1]):
                seen.append(current)
            time.sleep(0.05)
        raise AssertionError(f"'{title}' did not finish in {timeout} s; it showed {seen[-3:]}")


@pytest.fixture(scope="module")
def lab_and_chromium(notebook_series, tmp_path_factory):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    lab = LabServer(notebook_series.folder, tmp_path_factory.mktemp("lab"))
    try:
        lab.wait_ready()
        assert http_status(f"{lab.base}/api/contents") == 403, "JupyterLab answered without its token"
        with sync_playwright() as driver:
            chromium = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            yield lab, chromium
            chromium.close()
    finally:
        lab.stop()


@pytest.fixture
def browser(lab_and_chromium):
    """A new page per test, as an attendee opens a notebook in a new tab."""
    lab, chromium = lab_and_chromium
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    yield Browser(page, lab)
    page.close()  # without beforeunload: JupyterLab would ask about the unsaved notebook


def test_setup_notebook_in_jupyterlab(browser):
    with browser.step("00-opened"):
        browser.open("00_setup")
    with browser.step("00-ran-all-cells"):
        browser.run_all(RUN_ALL_TIMEOUT["00_setup"])
        toasts = browser.page.locator(".Toastify__toast:visible").all_text_contents()
        assert not toasts, f"pop-ups cover the notebook (make setup sets JupyterLab's defaults): {toasts}"
    with browser.step("00-profile-table"):
        table = browser.code_cell("profile.show()").locator("table")
        assert table.count() == 1, f"the profile prints as text, not a table: {browser.output_text('profile.show()')[:300]!r}"
        rows = dict(zip(table.locator("th").all_text_contents(), table.locator("td").all_text_contents()))
        assert rows.get("profile") == "smoke", f"profile table rows: {rows}"
        table.scroll_into_view_if_needed()
    with browser.step("00-kernel-environment"):
        hardware = browser.output_text("envinfo.hardware()")
        assert re.search(r"python \S+ in \.venv\b", hardware), f"the kernel is not the project's .venv: {hardware[:300]!r}"
    with browser.step("00-self-check"):
        last = browser.page.locator(".jp-NotebookPanel:visible .jp-CodeCell").last
        last.scroll_into_view_if_needed()
        assert "set-up OK: profile 'smoke'" in (last.locator(".jp-OutputArea").text_content() or "")


def test_live_demos_in_jupyterlab(browser, notebook_series, tmp_path):
    series = notebook_series.folder
    for maker in ("02_full_finetune_trainer", "03_qlora_llama3_sft"):
        if maker not in notebook_series.first_runs:  # run alone: make what 04 needs, headless
            notebook = ROOT / "notebooks" / f"{maker}.ipynb"
            run = execute(notebook, series, notebook.read_text(encoding="utf-8"))
            assert run.ok, f"could not make 04's inputs: {run}"
    with browser.step("04-opened"):
        browser.open("04_inference_pipeline")
    with browser.step("04-ran-all-cells"):
        browser.run_all(RUN_ALL_TIMEOUT["04_inference_pipeline"])
    with browser.step("04-classifier-demo"):
        answer = browser.demo("Paraphrase or not?", "A cat sat on the mat. || On the mat sat a cat.", "Classify")
        assert re.fullmatch(r"(\w+: \d\.\d\d)(, \w+: \d\.\d\d)+", answer), f"classifier demo answered {answer!r}"
    with browser.step("04-chat-demo"):
        growing, answer = browser.chat("Ask the fine-tuned chat model", "What are the symptoms of glaucoma?", "tokens/s")
        assert re.search(r"[A-Za-z]{3,}", answer), f"chat demo answered {answer!r}"
        assert not re.match(r"\w+(Error|Exception): ", answer), f"chat demo failed: {answer!r}"
        assert len(growing) >= 2, f"the answer did not show while it was written: before the end only {growing}"
        assert all(len(a) < len(b) and b.startswith(a) for a, b in zip(growing, growing[1:])), (
            f"the answer did not grow as it was written: {growing}")
        assert re.search(r"\d+ tokens in [\d.]+ s: [\d.]+ tokens/s; first words after [\d.]+ s", answer), answer
