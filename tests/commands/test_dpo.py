"""Preference tuning: pairs files, the implicit reward, the exported recipe, and `workshop dpo` end to end."""

import argparse
import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, write

BIN = Path(sys.executable).parent
SOURCE = ROOT / "notebooks" / "_sources" / "05_preference_dpo.py"

# The DPOConfig fields in which `workshop dpo` may differ from notebook 05's `dpo_args`: each is set by the
# command after the recipe's call, for something only the command does. Every other field must be equal.
COMMAND_ONLY_FIELDS = (
    "output_dir",        # where files go: the command's --output-dir, the notebook's outputs/<profile>/dpo-checkpoints
    "save_strategy",     # the command checkpoints so that an interrupted run resumes; the notebook saves none ("no")
    "save_steps",        # ... a third of the way through the run
    "save_total_limit",  # ... keeping the last two checkpoints
)


def _pair(question, chosen="The reference answer.", rejected="My own answer.", split="train"):
    return {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "split": split}


def _pairs_file(path, pairs):
    return write(path, "".join(json.dumps(p) + "\n" for p in pairs))


GOOD = [_pair(f"What is disease {i}?", chosen=f"Disease {i} is rare.") for i in range(4)] + [
    _pair("What is glaucoma?", chosen="Glaucoma harms the optic nerve.", split="test")]


# --------------------------------------------------------------------------- pairs files
def test_good_pairs_load_by_split(tmp_path):
    from workshop_utils.dpo import load_pairs, write_pairs

    path = write_pairs(tmp_path / "p.jsonl", GOOD)
    pairs = load_pairs(path)
    assert [len(pairs["train"]), len(pairs["test"])] == [4, 1]
    assert pairs["test"][0]["chosen"][0]["content"] == "Glaucoma harms the optic nerve."


BAD_PAIRS = {
    "not json": (lambda d: write(d / "p.jsonl", json.dumps(GOOD[0]) + "\n{oops\n"), "p.jsonl: line 2: not valid JSON"),
    "missing key": (lambda d: _pairs_file(d / "p.jsonl", [{k: v for k, v in GOOD[0].items() if k != "rejected"}]),
                    "line 1: missing rejected"),
    "plain text answer": (lambda d: _pairs_file(d / "p.jsonl", [{**GOOD[0], "chosen": "just text"}]),
                          "line 1: 'chosen' must be a non-empty assistant message"),
    "empty rejected": (lambda d: _pairs_file(d / "p.jsonl", [_pair("q?", rejected="  ")]),
                       "line 1: 'rejected' must be a non-empty assistant message"),
    "bad split": (lambda d: _pairs_file(d / "p.jsonl", [{**GOOD[0], "split": "validation"}]),
                  "line 1: split must be 'train' or 'test'"),
    "no held-out pairs": (lambda d: _pairs_file(d / "p.jsonl", GOOD[:4]), "no pairs with split 'test'"),
    "held-out prompt in training": (lambda d: _pairs_file(d / "p.jsonl", GOOD + [_pair("What is disease 1?", "x", split="test")]),
                                    "share their prompt with a training pair"),
    "held-out answer in training": (lambda d: _pairs_file(d / "p.jsonl", GOOD + [_pair("New?", "Disease 2 is rare.", split="test")]),
                                    "share their chosen answer with a training pair"),
    "missing file": (lambda d: d / "nope.jsonl", "nope.jsonl: pairs file not found"),
}


@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_bad_pairs_are_one_error_line(case, tmp_path, capsys, tmp_outputs, sft_adapter):
    """Through the command: one line naming the file (and line), before any model is loaded, nothing written."""
    from workshop_utils.commands.cli import main

    make, expected = BAD_PAIRS[case]
    data = make(tmp_path)
    code = main(["dpo", "--adapter", str(sft_adapter), "--data", str(data), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, err
    assert not (tmp_path / "out").exists()


def test_arguments_are_checked_before_anything_loads(tmp_path, capsys, sft_adapter):
    from workshop_utils.commands.cli import main

    cases = [
        (["--adapter", str(tmp_path)], "not a LoRA adapter folder"),
        (["--adapter", str(sft_adapter), "--max-steps", "0"], "--max-steps must be a positive number"),
        (["--adapter", str(sft_adapter), "--beta", "-1"], "--beta must be positive"),
    ]
    for extra, expected in cases:
        assert main(["dpo", *extra, "--output-dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and expected in err, err
    assert main(["dpo", "--adapter", str(sft_adapter), "--output-dir", str(sft_adapter)]) == 2
    assert "must not be the --adapter folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- the implicit reward
def test_preference_metrics_by_hand():
    from workshop_utils.recipes.preference_dpo import preference_metrics

    # (sum log p, tokens); pair 1: chosen +2 vs reference, rejected -1 -> margin 0.1 * 3 = 0.3
    # pair 2: chosen -1, rejected +1 -> margin -0.2; pair 3: no change -> a tie, which is no preference (as in TRL)
    policy = {"chosen": [(-8.0, 4), (-11.0, 5), (-6.0, 3)], "rejected": [(-11.0, 4), (-5.0, 5), (-3.0, 3)]}
    reference = {"chosen": [(-10.0, 4), (-10.0, 5), (-6.0, 3)], "rejected": [(-10.0, 4), (-6.0, 5), (-3.0, 3)]}
    m = preference_metrics(policy, reference, beta=0.1)
    assert m["preference_accuracy"] == pytest.approx(1 / 3)
    assert m["reward_margin"] == pytest.approx((0.3 - 0.2 + 0.0) / 3)
    same = preference_metrics(reference, reference, beta=0.1)
    assert same == {"preference_accuracy": 0.0, "reward_margin": 0.0}  # before training: every margin is a tie


def test_pairs_prefer_the_guarded_answer_and_skip_identical_ones():
    """chosen = the answer decoded with the repetition penalty, rejected = plain greedy; same answer -> no pair."""
    from workshop_utils.answers import Answer
    from workshop_utils.recipes.preference_dpo import build_pairs

    greedy = [Answer("Flu is a virus. Flu is a virus. Flu is a virus.", False, 48), Answer("Same.", True, 2),
              Answer("", True, 0)]
    guarded = [Answer("Flu is an infection caused by a virus.", True, 9), Answer("Same.", True, 2), Answer("Empty?", True, 2)]
    pairs = build_pairs(["What is flu?", "Q2?", "Q3?"], greedy, guarded, "train")
    assert len(pairs) == 1
    assert pairs[0]["chosen"][0]["content"] == "Flu is an infection caused by a virus."
    assert pairs[0]["rejected"][0]["content"].startswith("Flu is a virus. Flu is a virus.")
    assert pairs[0]["prompt"][-1] == {"role": "user", "content": "What is flu?"} and pairs[0]["split"] == "train"
    # a held-out pair sharing an answer with a training pair is left out (load_pairs would call it a leak)
    held = build_pairs(["What is a cold?", "What is gout?"], [Answer("Flu is a virus. Flu is a virus. Flu is a virus.", False, 48),
                       Answer("Gout hurts. Gout hurts. Gout hurts.", False, 30)],
                       [Answer("A mild infection.", True, 4), Answer("A form of arthritis.", True, 5)], "test", training_pairs=pairs)
    assert [p["prompt"][-1]["content"] for p in held] == ["What is gout?"]


def test_exported_recipe_is_the_notebooks_code():
    """The command imports recipes/preference_dpo.py; it must be exactly notebook 05's export cells."""
    from workshop_utils.tooling.nbbuild import export_module, export_target

    target = export_target(SOURCE)
    assert target == ROOT / "src" / "workshop_utils" / "recipes" / "preference_dpo.py"
    assert target.read_text(encoding="utf-8") == export_module(SOURCE), "run `python -m workshop_utils.tooling.nbbuild`"
    text = target.read_text(encoding="utf-8")
    for name in ("def load_sft_model", "def sft_base_model", "def make_pair", "def answer_twice", "def build_pairs",
                 "def preference_metrics", "def score", "def dpo_config", "DPOConfig(", "def save_adapter"):
        assert name in text, name


def test_dpo_config_follows_the_profile():
    from workshop_utils.profiles import make_profile
    from workshop_utils.recipes.preference_dpo import dpo_config

    profile = make_profile("smoke", "test", cuda=False, hub=False)
    config = dpo_config(profile, "/tmp/unused-dpo")
    assert config.max_steps == profile.dpo_max_steps and config.beta == profile.dpo_beta
    assert config.learning_rate == profile.dpo_learning_rate and config.per_device_train_batch_size == profile.dpo_batch_size
    assert config.bf16 is False and config.gradient_checkpointing is False and config.use_cpu is True  # DPOConfig defaults differ
    assert config.optim == "adamw_torch" and config.save_strategy == "no" and (config.seed, config.data_seed) == (42, 42)
    assert config.loss_type == ["sigmoid"] and config.max_length == profile.sft_max_length


def notebook_call(source: Path, variable: str, namespace: dict):
    """Evaluate the right-hand side of the notebook's ``variable = ...`` statement in ``namespace``
    (as tests/commands/test_recipes.py does for 02 and 03)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    found = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets)]
    assert len(found) == 1, f"{source.name}: expected one assignment to {variable}, found {len(found)}"
    return eval(compile(ast.Expression(found[0]), source.name, "eval"), namespace)  # noqa: S307 - our own source


def _command_args(*extra):
    from workshop_utils.commands import dpo

    parser = argparse.ArgumentParser()
    dpo.add_arguments(parser)
    return parser.parse_args(["--adapter", "unused-adapter", "--output-dir", "unused-out", *extra])


def _profile(name):
    """smoke and offline as on this CPU machine; "offline-gpu": offline's values with device cuda (fp32, so that
    TrainingArguments' own check for a GPU does not fire here): the GPU branch of the recipe, checked without one."""
    from workshop_utils.profiles import make_profile

    if name == "offline-gpu":
        return dataclasses.replace(make_profile("offline", "test", cuda=False, hub=False), device="cuda", precision="fp32")
    return make_profile(name, "test", cuda=False, hub=False)


@pytest.mark.parametrize("profile_name", ["smoke", "offline", "offline-gpu"])
def test_workshop_dpo_uses_notebook_05s_config(profile_name, tmp_path, tmp_outputs):
    """Notebook 05's own `dpo_args = ...`, evaluated as written, against the command's config for the same profile
    and default options: equal in every field but COMMAND_ONLY_FIELDS."""
    from workshop_utils.commands import dpo
    from workshop_utils.recipes.preference_dpo import dpo_config

    profile = _profile(profile_name)
    notebook = notebook_call(SOURCE, "dpo_args", {"dpo_config": dpo_config, "profile": profile})
    command = dpo.command_config(_command_args(), profile, tmp_path / "cmd")
    nb, cmd = notebook.to_dict(), command.to_dict()
    assert set(COMMAND_ONLY_FIELDS) <= set(nb) and set(nb) == set(cmd)
    assert {k: v for k, v in cmd.items() if k not in COMMAND_ONLY_FIELDS} == {k: v for k, v in nb.items() if k not in COMMAND_ONLY_FIELDS}
    # what the command adds, and that it is the command's alone
    assert notebook.output_dir == str(tmp_outputs / profile.name / "dpo-checkpoints") and command.output_dir == str(tmp_path / "cmd")
    assert notebook.save_strategy == "no" and command.save_strategy == "steps"
    assert command.save_steps == max(1, profile.dpo_max_steps // 3) and command.save_total_limit == 2
    # the notebook's call reads the profile, and the GPU/CPU choices follow its device
    assert (notebook.max_steps, notebook.learning_rate, notebook.beta) == (profile.dpo_max_steps, profile.dpo_learning_rate, profile.dpo_beta)
    assert notebook.warmup_steps == notebook.logging_steps == max(1, profile.dpo_max_steps // 10)
    on_gpu = profile.device == "cuda"
    assert (notebook.use_cpu, notebook.gradient_checkpointing) == (not on_gpu, on_gpu)
    assert notebook.optim == ("paged_adamw_8bit" if on_gpu else "adamw_torch")


def test_workshop_dpo_options_reach_the_config(tmp_path):
    from workshop_utils.commands import dpo

    profile = _profile("smoke")
    args = _command_args("--max-steps", "9", "--learning-rate", "1e-4", "--beta", "0.5", "--seed", "7")
    assert (profile.dpo_max_steps, profile.dpo_learning_rate, profile.dpo_beta) != (9, 1e-4, 0.5)
    config = dpo.command_config(args, profile, tmp_path)
    assert (config.max_steps, config.learning_rate, config.beta) == (9, 1e-4, 0.5)
    # the recipe's derived steps follow --max-steps, as the checkpoint cadence does
    assert (config.warmup_steps, config.logging_steps, config.save_steps) == (1, 1, 3)
    assert (config.seed, config.data_seed) == (7, 7)
    assert dataclasses.replace(config).to_dict() == config.to_dict()  # built again, DPOConfig's __post_init__ agrees


# --------------------------------------------------------------------------- the command end to end
@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory):
    """An SFT adapter on the tiny random Llama, from `workshop sft` (these tests are about plumbing)."""
    from workshop_utils.assets import tiny_llama_path

    out = tmp_path_factory.mktemp("dpo-sft") / "adapter"
    cmd = [str(BIN / "workshop"), "sft", "--output-dir", str(out), "--model", str(tiny_llama_path()), "--max-steps", "2",
           "--train-rows", "16", "--eval-rows", "2", "--max-new-tokens", "8", "--batch-size", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WORKSHOP_PROFILE": "smoke",
                                                                    "OMP_NUM_THREADS": "1"}, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _dpo(adapter, out, *extra, env=None):
    cmd = [str(BIN / "workshop"), "dpo", "--adapter", str(adapter), "--output-dir", str(out), "--max-steps", "3",
           "--train-pairs", "6", "--eval-pairs", "3", *extra]
    full_env = {**os.environ, "WORKSHOP_PROFILE": "smoke", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=300)


def _medquad_pairs(folder):
    """Real MedQuAD questions and answers; "rejected" is another question's answer (the tiny random model
    writes no text worth pairing, so these tests give the command a pairs file)."""
    from workshop_utils.data import load_instruction_task
    from workshop_utils.recipes.preference_dpo import make_pair

    dd = load_instruction_task(source=str(ROOT / "data" / "medquad"), max_rows={"train": 7, "test": 4})
    pairs = []
    for split, n in (("train", 6), ("test", 3)):
        rows = dd[split]
        pairs += [make_pair(rows[i]["instruction"], rows[i]["response"], rows[i + 1]["response"], split) for i in range(n)]
    from workshop_utils.dpo import write_pairs

    return write_pairs(folder / "pairs.jsonl", pairs)


@pytest.fixture(scope="module")
def resumed_dpo(sft_adapter, tmp_path_factory):
    """A DPO run interrupted right after its step-1 checkpoint, then the same command again."""
    folder = tmp_path_factory.mktemp("dpo")
    pairs, out = _medquad_pairs(folder), folder / "run"
    first = _dpo(sft_adapter, out, "--data", str(pairs), env={"WORKSHOP_DPO_INTERRUPT_AT_STEP": "1"})
    first.left = sorted(p.name for p in out.iterdir())
    second = _dpo(sft_adapter, out, "--data", str(pairs))
    return out, first, second


def test_interrupted_dpo_run_resumes(resumed_dpo):
    out, first, second = resumed_dpo
    assert first.returncode == 130, first.stderr[-2000:]
    assert "checkpoint-1" in first.left and "before.json" in first.left and "metrics.json" not in first.left, first.left
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["resumed_from"] == "checkpoint-1"
    assert not list(out.glob("checkpoint-*"))


def test_dpo_cli_writes_metrics_and_adapter(resumed_dpo, sft_adapter):
    out, _, second = resumed_dpo
    metrics = json.loads((out / "metrics.json").read_text())
    for side in ("before", "after"):
        # notebook 03's scoring keys under 03's decoding, plain greedy beside them, and the reward diagnostics
        assert {"nll", "rougeL", "eos_rate", "repetition", "decoding", "preference_accuracy", "reward_margin"} <= set(metrics[side])
        assert {"rougeL", "eos_rate", "repetition", "decoding"} <= set(metrics[side]["plain_greedy"])
        assert metrics[side]["plain_greedy"]["decoding"] == "plain greedy"
        assert metrics[side]["decoding"].startswith("greedy, repetition penalty")  # the smoke profile's 1.1
        assert 0 <= metrics[side]["preference_accuracy"] <= 1 and "logprobs" not in metrics[side]
    assert metrics["before"]["preference_accuracy"] == 0.0 and metrics["before"]["reward_margin"] == 0.0
    assert metrics["after"]["reward_margin"] != 0.0  # training moved the policy away from the reference
    assert metrics["train_seconds"] > 0 and metrics["train_pairs"] == 6 and metrics["eval_pairs"] == 3
    assert metrics["eval_questions"] == 3
    assert metrics["pairs"] == "given" and len(metrics["margins_during_training"]["step"]) >= 1
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt*"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == json.loads((sft_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert str(ROOT) not in (out / "adapter_config.json").read_text() and str(ROOT) not in (out / "README.md").read_text()
    assert "preference accuracy" in second.stdout and "plain greedy" in second.stdout


def test_without_data_the_command_builds_and_keeps_checked_pairs(tmp_path, monkeypatch):
    """No --data: pairs come from the recipe's answer_twice/build_pairs on the profile's MedQuAD, are written to
    DIR/pairs.jsonl and read back through the checking loader (a resumed run reuses them)."""
    import argparse

    from workshop_utils.commands import dpo
    from workshop_utils.answers import Answer
    from workshop_utils.profiles import make_profile
    from workshop_utils.recipes import preference_dpo as recipe

    def fake_answers(model, tokenizer, questions, **kwargs):
        return ([Answer(f"{q} {q} {q}", False, 30) for q in questions],
                [Answer(f"An answer to {q}", True, 8) for q in questions])

    monkeypatch.setattr(recipe, "answer_twice", fake_answers)
    profile = make_profile("smoke", "test", cuda=False, hub=False)
    args = argparse.Namespace(train_pairs=5, eval_pairs=3, seed=42)
    questions = ["What is held-out disease 1?", "What is held-out disease 2?", "What is held-out disease 3?"]
    pairs, held = dpo._pairs_for_run(profile, None, None, tmp_path, args, None, recipe, questions)
    assert [len(pairs["train"]), len(pairs["test"])] == [5, 3] and len(held[0]) == 3
    assert dpo.load_pairs(tmp_path / "pairs.jsonl") == pairs
    monkeypatch.setattr(recipe, "answer_twice", lambda *a, **k: pytest.fail("a resumed run must reuse pairs.jsonl"))
    assert dpo._pairs_for_run(profile, None, None, tmp_path, args, None, recipe, questions) == (pairs, None)


def test_dpo_refuses_to_overwrite_a_finished_run(resumed_dpo, sft_adapter, capsys):
    from workshop_utils.commands.cli import main

    out, _, _ = resumed_dpo
    stamp = (out / "metrics.json").stat().st_mtime
    assert main(["dpo", "--adapter", str(sft_adapter), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "metrics.json" in err
    assert (out / "metrics.json").stat().st_mtime == stamp
