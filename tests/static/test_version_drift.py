"""Version-drift guard: every keyword the notebooks and helpers pass to the Hugging Face APIs exists in
the pinned versions.

The libraries rename arguments between releases (``evaluation_strategy`` -> ``eval_strategy``,
``tokenizer`` -> ``processing_class``, ``max_seq_length`` -> ``max_length``) and an old name either
raises at run time, deep inside a notebook, or is silently ignored. This test reads the code with
``ast`` (no notebook is executed), collects the keyword arguments of the calls listed in ``SPECS``
and checks each against the installed signatures. After a pin update it lists what to rename.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def scanned_files() -> list[Path]:
    """Every notebook source part, helper module and script that exists right now."""
    files = sorted((ROOT / "notebooks" / "_sources").glob("*.py"))
    files += sorted((ROOT / "src" / "workshop_utils").glob("*.py"))
    files += sorted((ROOT / "scripts").glob("*.py"))
    return files


# ----------------------------------------------------------------------------- collecting calls
def dotted(node: ast.AST) -> str | None:
    """``a.b.C`` for a Name/Attribute chain (calls in the chain are kept as ``()``)."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            break
        elif isinstance(node, ast.Call):
            parts.append("()")
            node = node.func
        else:
            return None
    return ".".join(reversed(parts))


PEFT_OWNERS = {"PeftModel", "PeftModelForCausalLM", "PeftModelForSequenceClassification",
               "AutoPeftModel", "AutoPeftModelForCausalLM", "AutoPeftModelForSequenceClassification"}
CLASSES = {"TrainingArguments", "Trainer", "SFTConfig", "SFTTrainer", "LoraConfig", "BitsAndBytesConfig",
           "DataCollatorWithPadding", "pipeline", "GenerationConfig", "EarlyStoppingCallback",
           "prepare_model_for_kbit_training", "DataCollatorForLanguageModeling"}


def spec_key(name: str) -> str | None:
    """Which entry of SPECS a called name belongs to (None: not checked)."""
    parts = name.split(".")
    last, owner = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if last == "from_pretrained":
        if owner == "FastLanguageModel":
            return "FastLanguageModel.from_pretrained"
        if owner in PEFT_OWNERS:
            return "PeftModel.from_pretrained"
        if owner.startswith("AutoModel") or re.search(r"For(CausalLM|SequenceClassification)$", owner):
            return "AutoModel.from_pretrained"
        return None  # tokenizers, configs: their kwargs are free-form by design
    if last == "get_peft_model":
        return "FastLanguageModel.get_peft_model" if owner == "FastLanguageModel" else "get_peft_model"
    if last in ("merge_and_unload", "generate") and owner:
        return last
    if last in CLASSES:
        return last
    return None


@dataclasses.dataclass
class Use:
    spec: str
    keyword: str
    where: str


def collect(source: str, filename: str) -> list[Use]:
    tree = ast.parse(source, filename=filename)
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            key = spec_key(name) if name else None
            if key:
                for kw in node.keywords:
                    if kw.arg is not None:  # `**kwargs` cannot be checked statically
                        uses.append(Use(key, kw.arg, f"{filename}:{node.lineno}"))
    return uses


# ----------------------------------------------------------------------------- what the pins accept
def _params(fn) -> set[str]:
    sig = inspect.signature(fn)
    return {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


@functools.lru_cache(maxsize=1)
def unsloth_signatures() -> dict:
    """FastLanguageModel's parameters, read in a subprocess: importing unsloth takes ~15 s and patches
    transformers globally, which must not leak into this test process."""
    code = (
        "import inspect, json\n"
        "from unsloth import FastLanguageModel\n"
        "out = {}\n"
        "for name in ('from_pretrained', 'get_peft_model'):\n"
        "    sig = inspect.signature(getattr(FastLanguageModel, name))\n"
        "    out[name] = [n for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]\n"
        "print('SIGNATURES=' + json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("SIGNATURES=")), None)
    assert line, f"could not read unsloth's signatures:\n{proc.stderr[-2000:]}"
    return json.loads(line.split("=", 1)[1])


def _spec(key: str) -> tuple[set[str], dict[str, str]]:
    """(accepted keyword names, {old name: new name}) for one entry."""
    import transformers
    from transformers import GenerationConfig, GenerationMixin, PreTrainedModel, TrainingArguments

    renamed_model = {"torch_dtype": "dtype"}  # still popped by from_pretrained, but deprecated in 5.x
    if key == "TrainingArguments":
        return _fields(TrainingArguments), {"evaluation_strategy": "eval_strategy", "no_cuda": "use_cpu",
                                             "overwrite_output_dir": "(removed)"}
    if key == "Trainer":
        return _params(transformers.Trainer.__init__), {"tokenizer": "processing_class"}
    if key == "SFTConfig":
        from trl import SFTConfig

        return _fields(SFTConfig), {"max_seq_length": "max_length", "evaluation_strategy": "eval_strategy"}
    if key == "SFTTrainer":
        from trl import SFTTrainer

        return _params(SFTTrainer.__init__), {"tokenizer": "processing_class", "max_seq_length": "SFTConfig(max_length=...)",
                                              "dataset_text_field": "SFTConfig(dataset_text_field=...)"}
    if key == "LoraConfig":
        from peft import LoraConfig

        return _fields(LoraConfig), {}
    if key == "BitsAndBytesConfig":
        # __init__ takes **kwargs but only warns about unknown ones: the named parameters are the API.
        return _params(transformers.BitsAndBytesConfig.__init__), {}
    if key == "DataCollatorWithPadding":
        return _fields(transformers.DataCollatorWithPadding), {}
    if key == "DataCollatorForLanguageModeling":
        return _fields(transformers.DataCollatorForLanguageModeling), {}
    if key == "EarlyStoppingCallback":
        return _params(transformers.EarlyStoppingCallback.__init__), {}
    if key == "GenerationConfig":
        return set(GenerationConfig().to_dict()), {}
    if key == "prepare_model_for_kbit_training":
        from peft import prepare_model_for_kbit_training

        return _params(prepare_model_for_kbit_training), {}
    if key == "get_peft_model":
        from peft import get_peft_model

        return _params(get_peft_model), {}
    if key == "merge_and_unload":
        from peft.tuners.lora import LoraModel

        return _params(LoraModel.merge_and_unload), {}
    if key == "AutoModel.from_pretrained":
        # from_pretrained takes **kwargs: it pops the loading options listed in its body and passes
        # the rest to the model's config. Accepted = named parameters + those loading options + the
        # config's own fields (num_labels, id2label, problem_type, ...).
        accepted = _params(PreTrainedModel.from_pretrained) | MODEL_LOADING_KWARGS | _config_keys()
        return accepted, renamed_model
    if key == "PeftModel.from_pretrained":
        from peft import PeftModel

        # **kwargs there go to the PeftConfig loading (hub options); the named parameters are the API.
        return _params(PeftModel.from_pretrained) | {"torch_device", "subfolder", "revision", "cache_dir", "token"}, {}
    if key == "pipeline":
        # pipeline(**kwargs) hands the rest to the task's Pipeline class: its __init__ options plus
        # the call-time options of the two tasks the workshop uses, and generation settings.
        from transformers.pipelines.base import Pipeline

        accepted = _params(transformers.pipeline) | _params(Pipeline.__init__) | PIPELINE_KWARGS | set(GenerationConfig().to_dict())
        return accepted, renamed_model
    if key == "generate":
        # generate(**kwargs): generation settings (GenerationConfig fields) and the model's inputs.
        accepted = _params(GenerationMixin.generate) | set(GenerationConfig().to_dict()) | MODEL_INPUTS
        return accepted, {}
    if key == "FastLanguageModel.from_pretrained":
        # Extra **kwargs are forwarded to transformers' from_pretrained.
        return set(unsloth_signatures()["from_pretrained"]) | _params(PreTrainedModel.from_pretrained) | MODEL_LOADING_KWARGS, {}
    if key == "FastLanguageModel.get_peft_model":
        from peft import LoraConfig

        # Extra **kwargs end up in the LoraConfig unsloth builds.
        return set(unsloth_signatures()["get_peft_model"]) | _fields(LoraConfig), {}
    raise KeyError(key)


MODEL_LOADING_KWARGS = {
    "attn_implementation", "device_map", "dtype", "max_memory", "offload_folder", "offload_buffers",
    "quantization_config", "subfolder", "variant", "adapter_name", "adapter_kwargs", "key_mapping",
    "generation_config", "output_loading_info", "tp_plan", "low_cpu_mem_usage", "trust_remote_code",
    "gguf_file",
}
MODEL_INPUTS = {"input_ids", "attention_mask", "inputs_embeds", "position_ids", "past_key_values", "token_type_ids"}
PIPELINE_KWARGS = {
    "batch_size", "num_workers", "top_k", "function_to_apply", "return_all_scores", "truncation", "padding",
    "max_length", "return_full_text", "return_text", "return_tensors", "clean_up_tokenization_spaces",
    "prefix", "handle_long_generation", "stop_sequence", "continue_final_message", "add_special_tokens",
    "tokenizer_kwargs", "generate_kwargs", "generation_config",
}


@functools.lru_cache(maxsize=1)
def _config_keys() -> frozenset:
    from transformers import BertConfig, LlamaConfig, PretrainedConfig

    keys = _params(PretrainedConfig.__init__) | {"num_labels", "pad_token_id", "bos_token_id", "eos_token_id"}
    keys |= set(BertConfig().to_dict()) | set(LlamaConfig().to_dict())
    return frozenset(keys)


_accepted_cache: dict[str, tuple[set[str], dict[str, str]]] = {}


def check(uses: list[Use]) -> list[str]:
    """One line per keyword the pinned versions do not accept."""
    problems = []
    for use in uses:
        if use.spec not in _accepted_cache:
            _accepted_cache[use.spec] = _spec(use.spec)
        accepted, renamed = _accepted_cache[use.spec]
        if use.keyword in renamed:
            problems.append(f"{use.where}: {use.spec}({use.keyword}=...) was renamed: use {renamed[use.keyword]}")
        elif use.keyword not in accepted:
            problems.append(f"{use.where}: {use.spec} does not accept {use.keyword}= in the pinned versions")
    return problems


# ----------------------------------------------------------------------------- the tests
def all_uses() -> list[Use]:
    uses = []
    for path in scanned_files():
        uses += collect(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return uses


def test_scans_the_project():
    files = scanned_files()
    assert any(p.parent.name == "_sources" for p in files)
    assert any(p.name == "profiles.py" for p in files)


def test_every_keyword_exists_in_the_pinned_versions():
    uses = all_uses()
    print(f"{len(uses)} keyword uses checked in {len(scanned_files())} files: "
          + ", ".join(sorted({u.spec for u in uses})))
    problems = check(uses)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("TrainingArguments(output_dir='o', evaluation_strategy='epoch')", "renamed: use eval_strategy"),
    ("transformers.TrainingArguments(output_dir='o', no_cuda=True)", "renamed: use use_cpu"),
    ("SFTConfig(output_dir='o', max_seq_length=512)", "renamed: use max_length"),
    ("SFTTrainer(model=m, tokenizer=tok, train_dataset=d)", "renamed: use processing_class"),
    ("Trainer(model=m, tokenizer=tok)", "renamed: use processing_class"),
    ("LoraConfig(r=8, lora_alfa=16)", "LoraConfig does not accept lora_alfa="),
    ("AutoModelForSequenceClassification.from_pretrained(p, num_labels=2, torch_dtype='auto')", "renamed: use dtype"),
    ("BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant='nf4')", "does not accept bnb_4bit_quant="),
    ("pipeline('text-generation', model=m, max_seq_len=3)", "pipeline does not accept max_seq_len="),
    ("model.generate(**enc, max_new_token=5)", "generate does not accept max_new_token="),
])
def test_guard_catches_renamed_and_misspelt_arguments(source, expected):
    problems = check(collect(source, "synthetic.py"))
    print(problems)
    assert len(problems) == 1 and expected in problems[0]


def test_guard_accepts_the_current_names():
    source = (
        "TrainingArguments(output_dir='o', eval_strategy='epoch', use_cpu=True, report_to='none', seed=0)\n"
        "SFTConfig(output_dir='o', max_length=256, assistant_only_loss=True, gradient_checkpointing=False)\n"
        "SFTTrainer(model=m, args=a, train_dataset=d, processing_class=tok, peft_config=c)\n"
        "Trainer(model=m, args=a, processing_class=tok, data_collator=dc, compute_metrics=f)\n"
        "LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM')\n"
        "AutoModelForSequenceClassification.from_pretrained(p, num_labels=2, id2label={}, label2id={}, dtype='auto')\n"
        "pipeline('text-classification', model=m, tokenizer=t, device=-1, top_k=None)\n"
        "model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=0)\n"
    )
    assert check(collect(source, "synthetic.py")) == []


def test_unsloth_arguments_are_checked_too():
    uses = collect("FastLanguageModel.from_pretrained(model_name=m, max_sequence_length=9, load_in_4bit=True)\n"
                   "FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, use_gradient_checkpointing='unsloth')",
                   "synthetic.py")
    if not any(u.spec.startswith("FastLanguageModel") for u in all_uses()):
        # Importing unsloth costs ~15 s; pay it only when the project calls FastLanguageModel.
        pytest.skip("no FastLanguageModel call in the project yet")
    problems = check(uses)
    assert problems == ["synthetic.py:1: FastLanguageModel.from_pretrained does not accept max_sequence_length= in the pinned versions"]


def _requirement_pins() -> dict[str, str]:
    """What `make setup` installs: requirements.txt (what the notebooks import) and requirements-dev.txt."""
    pins = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
            if m:
                pins[m.group(1)] = m.group(2)
    return pins


def test_installed_versions_equal_the_pins():
    pins = _requirement_pins()
    for key in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "unsloth"):
        assert key in pins, f"{key} is not pinned in requirements.txt"
    wrong = []
    for name, pinned in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed (pinned {pinned})")
            continue
        if installed.split("+")[0] != pinned:
            wrong.append(f"{name}: installed {installed}, pinned {pinned}")
    assert not wrong, "run `make setup`: " + "; ".join(wrong)
