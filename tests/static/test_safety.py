"""Safe defaults, checked statically over every source that exists (src/, scripts/, notebook sources):
no remote code, safetensors only, hub ids only from profiles.py, tokens never printed."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from workshop_utils import envinfo
from workshop_utils.tooling import nbclean

ROOT = Path(__file__).resolve().parents[2]
NB_SOURCES = ROOT / "notebooks" / "_sources"


def code_files() -> list[Path]:
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))
    return files + sorted(NB_SOURCES.glob("*.py"))


def notebook_code(path: Path) -> str:
    """The code cells of a built notebook, as one Python text (what the attendee actually runs)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    # IPython magics/shell lines are not Python: blank them out for ast.
    return "\n".join(re.sub(r"(?m)^\s*[!%].*$", "", c) for c in cells)


def sources() -> list[tuple[str, str]]:
    """(name, python text) for every file scanned, built notebooks included."""
    out = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in code_files()]
    out += [(str(p.relative_to(ROOT)), notebook_code(p)) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    return out


def dotted(node) -> str:
    parts = []
    while isinstance(node, (ast.Attribute, ast.Call)):
        if isinstance(node, ast.Call):
            node = node.func
            continue
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


# ----------------------------------------------------------------------------- the checks
def remote_code_problems(text: str, name: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
            if not (isinstance(node.value, ast.Constant) and node.value.value in (False, None)):
                problems.append(f"{name}:{node.value.lineno}: trust_remote_code={ast.unparse(node.value)}")
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "trust_remote_code":
                    if not (isinstance(v, ast.Constant) and v.value in (False, None)):
                        problems.append(f"{name}:{v.lineno}: 'trust_remote_code': {ast.unparse(v)}")
    if re.search(r"trust_remote_code\s*[:=]\s*True", text) and not problems:
        problems.append(f"{name}: trust_remote_code set to True")
    return problems


def serialization_problems(text: str, name: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(text, filename=name)):
        if not isinstance(node, ast.Call):
            continue
        callee = dotted(node.func)
        for kw in node.keywords:
            if kw.arg in ("safe_serialization", "save_safetensors") and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is True
            ):
                problems.append(f"{name}:{node.lineno}: {callee}({kw.arg}={ast.unparse(kw.value)}): weights must be safetensors")
        if callee == "torch.save" or callee.endswith(".torch.save"):
            problems.append(f"{name}:{node.lineno}: torch.save(...) writes a pickle: use save_pretrained / safetensors")
        if callee.endswith("pickle.dump") or callee.endswith("joblib.dump"):
            problems.append(f"{name}:{node.lineno}: {callee}(...) writes a pickle")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[\w./-]*\.(bin|pt|pth|ckpt)", node.value):
            # Only the bare suffixes (used to *look for* such files) are fine.
            if node.value not in (".bin", ".pt", ".pth", ".ckpt", "*.bin", "*.pt", "*.pth", "*.ckpt"):
                problems.append(f"{name}:{node.lineno}: pickle weight file name {node.value!r}")
    return problems


# owner/name with hub-like characters; local folders the project uses are not hub ids.
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{1,95}/[\w.-]{1,95}$")
LOCAL_PREFIXES = {"data", "outputs", "notebooks", "src", "scripts", "tests", "docs", ".cache", ".", ".."}
# Literals that look like owner/name but are not hub ids (add with a reason).
HUB_ID_ALLOWLIST = {
    "text/plain", "text/html", "image/png", "application/json",  # MIME types
    "rewards/margins", "rewards/accuracies",  # metric names TRL's DPOTrainer logs
}
# Words that make an owner/name literal a unit or a logged metric, not a model or dataset id.
UNIT_WORDS = {"s", "ms", "sec", "second", "seconds", "min", "h", "sample", "samples", "token", "tokens", "step",
              "steps", "it", "epoch", "epochs", "batch", "example", "examples", "train", "eval", "test", "gb", "mb"}


def hub_id_literals(text: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and HUB_ID_RE.match(node.value):
            value = node.value
            first = value.split("/")[0]
            if first in LOCAL_PREFIXES or value in HUB_ID_ALLOWLIST:
                continue
            if set(value.lower().split("/")) & UNIT_WORDS:
                continue  # a unit or a metric name such as 'samples/s', 'ms/sample', 'train/loss'

            if re.search(r"\.(py|ipynb|json|jsonl|tsv|csv|txt|md|png|safetensors|yaml|toml)$", value):
                continue  # a file name, not a model or dataset id
            found.append(f"{name}:{node.lineno}: {value!r}")
    return found


LOADERS = ("from_pretrained", "load_dataset", "pipeline", "snapshot_download", "hf_hub_download")


def literal_id_in_loader_calls(text: str, name: str) -> list[str]:
    """from_pretrained/load_dataset/pipeline called with a string literal model or data id."""
    found = []
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, ast.Call) and dotted(node.func).split(".")[-1] in LOADERS:
            callee = dotted(node.func).split(".")[-1]
            args = list(node.args[:1]) if callee != "pipeline" else list(node.args[1:2])
            args += [kw.value for kw in node.keywords if kw.arg in (
                "pretrained_model_name_or_path", "model", "model_id", "model_name", "path", "repo_id")]
            for arg in args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and HUB_ID_RE.match(arg.value):
                    found.append(f"{name}:{node.lineno}: {callee}({arg.value!r})")
    return found


SECRET_NAMES = re.compile(r"(?i)^(hf_?token|token|api_?key|secret|password|hub_token|access_token)$")
LOG_CALLS = re.compile(r"(^|\.)(print|debug|info|warning|warn|error|exception|critical|log|write|display|echo)$")


def _mentions_secret(node: ast.AST) -> str | None:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and SECRET_NAMES.match(sub.id):
            return sub.id
        if isinstance(sub, ast.Attribute) and SECRET_NAMES.match(sub.attr):
            return sub.attr
        if isinstance(sub, ast.Call) and dotted(sub.func).split(".")[-1] in ("get_token", "getenv", "get"):
            if dotted(sub.func).split(".")[-1] == "get_token":
                return "get_token()"
            if sub.args and isinstance(sub.args[0], ast.Constant) and str(sub.args[0].value) in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
                return f"{dotted(sub.func)}({sub.args[0].value!r})"
        if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) and sub.slice.value in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            return f"[{sub.slice.value!r}]"
    return None


def token_output_problems(text: str, name: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, ast.Call) and LOG_CALLS.search(dotted(node.func) or ""):
            for arg in [*node.args, *[kw.value for kw in node.keywords]]:
                what = _mentions_secret(arg)
                if what:
                    problems.append(f"{name}:{node.lineno}: {dotted(node.func)}(...) shows {what}")
    return problems


# ----------------------------------------------------------------------------- on the project
def test_scans_something():
    names = [n for n, _ in sources()]
    assert any("_sources" in n for n in names) and any(n.endswith(".ipynb") for n in names)
    assert any(n.endswith("profiles.py") for n in names)


def test_trust_remote_code_is_never_enabled():
    problems = [p for name, text in sources() for p in remote_code_problems(text, name)]
    assert not problems, problems


def test_weights_are_saved_as_safetensors_only():
    problems = [p for name, text in sources() for p in serialization_problems(text, name)]
    assert not problems, problems


def test_no_hard_coded_hub_ids_outside_profiles():
    problems = []
    for name, text in sources():
        if name.endswith("workshop_utils/profiles.py"):
            continue  # the one place hub ids live
        problems += hub_id_literals(text, name)
    assert not problems, "hub ids belong in profiles.py (use profile.clf_model etc.): " + "; ".join(problems)


def test_loaders_take_ids_from_the_profile():
    problems = [p for name, text in sources() if not name.endswith("profiles.py") for p in literal_id_in_loader_calls(text, name)]
    assert not problems, problems


def test_no_code_prints_or_logs_a_token():
    problems = [p for name, text in sources() for p in token_output_problems(text, name)]
    assert not problems, problems


def test_no_source_holds_a_secret():
    problems = [f"{name}: {kind} {m}" for name, text in sources() for kind, m in nbclean.find_secrets(text)]
    assert not problems, problems


# ----------------------------------------------------------------------------- the checks can fail
@pytest.mark.parametrize("snippet", [
    "AutoModel.from_pretrained(p, trust_remote_code=True)",
    "pipeline('text-generation', model=m, trust_remote_code=flag)",
    "kwargs = {'trust_remote_code': True}",
])
def test_remote_code_check_catches(snippet):
    assert remote_code_problems(snippet, "x.py")


def test_remote_code_check_allows_false():
    assert remote_code_problems("AutoModel.from_pretrained(p, trust_remote_code=False)", "x.py") == []


@pytest.mark.parametrize("snippet", [
    "model.save_pretrained(out, safe_serialization=False)",
    "TrainingArguments(output_dir='o', save_safetensors=False)",
    "torch.save(model.state_dict(), out / 'model.pt')",
    "open(p, 'wb').write(b) ; name = 'pytorch_model.bin'",
    "pickle.dump(model, fh)",
])
def test_serialization_check_catches(snippet):
    assert serialization_problems(snippet, "x.py")


def test_serialization_check_allows_safetensors_and_suffix_lookups():
    assert serialization_problems(
        "model.save_pretrained(out)\nmodel.save_pretrained(out, safe_serialization=True)\n"
        "bad = [p for p in out.iterdir() if p.suffix in ('.bin', '.pt')]", "x.py") == []


@pytest.mark.parametrize("snippet", [
    "AutoModelForSequenceClassification.from_pretrained('google-bert/bert-base-uncased')",
    "load_dataset('nyu-mll/glue', 'mrpc')",
    "pipeline('text-generation', model='HuggingFaceTB/SmolLM2-135M-Instruct')",
    "MODEL = 'unsloth/llama-3-8b-Instruct'",
])
def test_hub_id_check_catches(snippet):
    assert hub_id_literals(snippet, "x.py")


def test_hub_id_check_ignores_local_paths_and_units():
    assert hub_id_literals("p = 'data/paraphrase'; q = 'outputs/smoke'; r = 'x/results.json'; s = 'a b/c'", "x.py") == []
    assert hub_id_literals("u = ['samples/s', 'ms/sample', 'tokens/s', 'train/loss', 'eval/accuracy']", "x.py") == []


def test_loader_check_catches_literal_ids():
    assert literal_id_in_loader_calls("AutoTokenizer.from_pretrained('meta-llama/Meta-Llama-3-8B')", "x.py")
    assert literal_id_in_loader_calls("AutoTokenizer.from_pretrained(profile.llm_model)", "x.py") == []


@pytest.mark.parametrize("snippet", [
    "print(os.environ['HF_TOKEN'])",
    "print(f'token: {token}')",
    "logger.info('using %s', get_token())",
    "print(os.getenv('HF_TOKEN'))",
    "sys.stdout.write(hf_token)",
])
def test_token_print_check_catches(snippet):
    assert token_output_problems(snippet, "x.py")


def test_token_print_check_allows_talking_about_tokens():
    ok = "print('set HF_TOKEN or run `hf auth login`')\nprint(tokenizer.pad_token, n_tokens, tokenizer.eos_token)"
    assert token_output_problems(ok, "x.py") == []


# ----------------------------------------------------------------------------- at run time
FAKE = "hf_" + "FakeTokenValue0123456789" + "Xy"


@pytest.mark.parametrize("var", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_hub_login_hint_never_shows_the_token(monkeypatch, var):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv(var, FAKE)
    hint = envinfo.hub_login_hint()
    assert "token" in hint and "never shown" in hint
    assert FAKE not in hint and FAKE[3:12] not in hint
    assert nbclean.find_secrets(hint) == []


def test_hub_login_hint_never_shows_a_stored_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(FAKE)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    hint = envinfo.hub_login_hint()
    assert "stored" in hint and FAKE not in hint


def test_tiny_llama_is_safetensors_only():
    from workshop_utils.assets import tiny_llama_path

    folder = tiny_llama_path()
    names = [p.name for p in folder.iterdir()]
    assert any(n.endswith(".safetensors") for n in names), names
    unsafe = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"))]
    assert not unsafe, unsafe
