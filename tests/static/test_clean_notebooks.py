"""The clean-notebooks gate (workshop_utils.tooling.nbclean) on the real notebooks and on broken copies."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workshop_utils.tooling import nbbuild, nbclean

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
# Built at run time so that this file itself holds nothing token-shaped.
FAKE_HF_TOKEN = "hf_" + "Zq7" * 9


def run_gate(*args):
    """The gate's command line, called in this process (the broken copies below are absolute paths)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = nbclean.main([str(a) for a in args])
    return subprocess.CompletedProcess(["nbclean", *args], code, out.getvalue(), err.getvalue())


# ----------------------------------------------------------------------------- the real tree
def test_committed_notebooks_pass_the_gate():
    assert sorted(NOTEBOOKS.glob("*.ipynb")), "no notebooks found"
    # as `make check-notebooks` runs it: its own process, from the repository root
    proc = subprocess.run([sys.executable, "-m", "workshop_utils.tooling.nbclean", "--check", "notebooks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    stems = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    sources = {p.stem for p in nbbuild.notebook_sources(NOTEBOOKS / "_sources")}
    assert stems == sources


def test_gate_is_wired_into_make_and_ci():
    makefile = (ROOT / "Makefile").read_text()
    # `make test` runs tests/, and this file is in tests/: the gate runs in CI through it.
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "tests" in test_recipe and "pytest" in test_recipe
    assert Path(__file__).parents[1].name == "tests" and Path(__file__).name.startswith("test_")
    assert "nbclean --check notebooks" in makefile  # `make check-notebooks`
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _git_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return [ROOT / name for name in out.split("\0") if name]


def test_no_repository_text_file_holds_a_secret():
    files = _git_files()
    assert files, "git ls-files found nothing"
    offenders = []
    for path in files:
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        for kind, masked in nbclean.find_secrets(data.decode("utf-8", errors="replace")):
            offenders.append(f"{path.relative_to(ROOT)}: {kind} {masked}")
    assert not offenders, offenders


# ----------------------------------------------------------------------------- broken copies
@pytest.fixture
def nb_tree(tmp_path):
    """A copy of notebooks/ (sources and built notebooks) that each test may break."""
    tree = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS / "_sources", tree / "_sources")
    for nb in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, tree / nb.name)
    return tree


def _first(tree: Path) -> Path:
    return sorted(tree.glob("*.ipynb"))[0]


def _edit(path: Path, change) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    change(nb)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _code_cell(nb):
    return next(c for c in nb["cells"] if c["cell_type"] == "code")


def test_copy_of_the_tree_is_clean(nb_tree):
    proc = run_gate("--check", nb_tree)
    assert proc.returncode == 0, proc.stderr


def test_flags_outputs(nb_tree):
    nb = _first(nb_tree)
    _edit(nb, lambda d: _code_cell(d).update(outputs=[{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]))
    proc = run_gate("--check", nb_tree)
    print(proc.stderr)
    assert proc.returncode == 1
    assert f"{nb.name}: outputs in 1 cell(s)" in proc.stderr


def test_flags_execution_count(nb_tree):
    nb = _first(nb_tree)
    _edit(nb, lambda d: _code_cell(d).update(execution_count=3))
    proc = run_gate("--check", nb_tree)
    print(proc.stderr)
    assert proc.returncode == 1
    assert "execution counts in 1 cell(s)" in proc.stderr


@pytest.mark.parametrize("path", ["/home/alice/workshop/data", "/Users/bob/x.ipynb", "/work/main/outputs",
                                  "/root/.cache/x", "/tmp/run/out.ipynb", "C:\\Users\\carol\\nb"])
def test_flags_absolute_machine_paths(nb_tree, path):
    nb = _first(nb_tree)
    _edit(nb, lambda d: d["cells"][0]["source"].append(f"\nsaved to {path}"))
    proc = run_gate("--check", nb_tree)
    print(proc.stderr)
    assert proc.returncode == 1
    assert "absolute machine path" in proc.stderr and "cell 0 source" in proc.stderr


def test_relative_paths_are_not_machine_paths():
    assert nbclean.find_abs_paths("outputs/smoke/results.json, data/tmp/x, https://hf.co/home/page") == []


@pytest.mark.parametrize("secret", [
    FAKE_HF_TOKEN,
    "api_key = '" + "a1B2" * 6 + "'",
    "HF_TOKEN=" + "hf_" + "x" * 4 + "9" * 30,
    "sk-" + "Qw3" * 8,
])
def test_flags_token_shaped_strings_without_echoing_them(nb_tree, secret):
    nb = _first(nb_tree)
    _edit(nb, lambda d: _code_cell(d)["source"].append(f"\ntoken = {secret!r}"))
    proc = run_gate("--check", nb_tree)
    print(proc.stderr)
    assert proc.returncode == 1
    assert "-shaped string" in proc.stderr
    assert secret not in proc.stderr and secret[-12:] not in proc.stderr  # masked


@pytest.mark.parametrize("text", ["pad_token=tokenizer.pad_token_id", "hf_hub_download(repo_id=profile.llm_model)",
                                  "api_key=read_it_from_the_environment", "max_new_tokens=128"])
def test_ordinary_code_is_not_a_secret(text):
    assert nbclean.find_secrets(text) == []


def test_flags_notebook_out_of_sync_with_its_source(nb_tree):
    src = sorted((nb_tree / "_sources").glob("*.py"))[0]
    src.write_text(src.read_text(encoding="utf-8") + "\n# %%\nprint('added to the source only')\n", encoding="utf-8")
    proc = run_gate("--check", nb_tree)
    print(proc.stderr)
    assert proc.returncode == 1
    assert f"{src.stem}.ipynb: out of sync with _sources/{src.name}" in proc.stderr


def test_flags_notebook_without_source_and_source_without_notebook(nb_tree):
    shutil.copy(_first(nb_tree), nb_tree / "99_orphan.ipynb")
    (nb_tree / "_sources" / "98_unbuilt.py").write_text("# %%\nprint(1)\n", encoding="utf-8")
    proc = run_gate("--check", nb_tree)
    print(proc.stderr)
    assert proc.returncode == 1
    assert "99_orphan.ipynb: no source _sources/99_orphan.py" in proc.stderr
    assert "98_unbuilt.ipynb: missing" in proc.stderr


def test_flags_invalid_json(nb_tree):
    _first(nb_tree).write_text("{not json", encoding="utf-8")
    proc = run_gate("--check", nb_tree)
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr


def test_strip_mode_cleans_outputs_in_place_and_restores_sync(nb_tree):
    nb = _first(nb_tree)
    clean_text = nb.read_text(encoding="utf-8")

    def run_it(d):
        for n, cell in enumerate(c for c in d["cells"] if c["cell_type"] == "code"):
            cell["execution_count"] = n + 1
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x\n"]}]
            cell["metadata"]["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00"}

    _edit(nb, run_it)
    assert run_gate("--check", nb_tree).returncode == 1
    proc = run_gate(nb_tree)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "cleaned" in proc.stdout
    assert nb.read_text(encoding="utf-8") == clean_text
    assert run_gate("--check", nb_tree).returncode == 0


def test_strip_mode_still_fails_on_what_it_cannot_fix(nb_tree):
    nb = _first(nb_tree)
    _edit(nb, lambda d: _code_cell(d)["source"].append(f"\nx = {FAKE_HF_TOKEN!r}"))
    proc = run_gate(nb_tree)
    assert proc.returncode == 1 and "Hugging Face token-shaped string" in proc.stderr


def test_builder_and_gate_agree_on_every_source():
    for src in sorted((NOTEBOOKS / "_sources").glob("*.py")):
        if "+" in src.stem:
            continue
        built = json.loads(nbbuild.build(src))
        assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in built["cells"])
