"""One recipe, one place: the `workshop` commands build their training arguments with the functions the
notebooks define in their `# export` cells, and for the same profile the two sides agree.

"From the notebook" here means the call the notebook source makes (the assignment to `training_args`,
`lora_args` or `sft_config`), evaluated as written; "from the command" means the command's own code path
with its defaults. Only what has to differ is left out of the comparison: where files go, and the
checkpoints a command keeps so it can resume an interrupted run.
"""

from __future__ import annotations

import ast
import argparse
from pathlib import Path

import pytest

from workshop_utils.commands import classifier, sft
from workshop_utils.routes import SFTRoute
from workshop_utils.tooling.nbbuild import export_module, export_target
from workshop_utils.profiles import make_profile

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "notebooks" / "_sources"
NB02 = SOURCES / "02_full_finetune_trainer.py"
NB03 = SOURCES / "03_qlora_llama3_sft.py"


def notebook_call(source: Path, variable: str, namespace: dict):
    """Evaluate the right-hand side of the notebook's ``variable = ...`` statement in ``namespace``."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    found = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets)]
    assert len(found) == 1, f"{source.name}: expected one assignment to {variable}, found {len(found)}"
    return eval(compile(ast.Expression(found[0]), source.name, "eval"), namespace)  # noqa: S307 - our own source


def parsed(add_arguments, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def comparable(arguments, leave_out: set[str]) -> dict:
    return {k: v for k, v in arguments.to_dict().items() if k not in leave_out}


@pytest.mark.parametrize("source", [NB02, NB03], ids=["02", "03"])
def test_recipe_module_is_the_notebooks_export_cells(source):
    target = export_target(source)
    assert target.is_file(), f"{target.name} missing: run `python -m workshop_utils.tooling.nbbuild`"
    assert target.read_text(encoding="utf-8") == export_module(source), "run `python -m workshop_utils.tooling.nbbuild`"


# What `workshop train-classifier` sets on notebook 02's arguments after the call, on the built object; every
# other field must be the notebook's for the same profile (the command's options go in through the profile).
CLASSIFIER_COMMAND_ONLY = {
    "output_dir",  # --output-dir: where the command's checkpoints and model go
    "save_only_model",  # False: the optimizer state stays in the checkpoints, so an interrupted run resumes
    "seed",  # --seed (its default, 42, is the notebook's: checked below)
    "data_seed",  # --seed too: the order of the batches
    "average_tokens_across_devices",  # False under DDP only (accelerate launch): one label per row, nothing to average
}


@pytest.mark.parametrize("processes", [1, 2], ids=["1-process", "ddp"])
@pytest.mark.parametrize("profile_name", ["smoke", "offline", "cpu"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_train_classifier_uses_notebook_02s_arguments(profile_name, lora, processes, tmp_path, monkeypatch):
    import dataclasses

    from transformers import TrainerState

    from workshop_utils.recipes.full_finetune_trainer import classifier_training_args

    profile = make_profile(profile_name, "test", cuda=False, hub=profile_name == "cpu")
    namespace = {"classifier_training_args": classifier_training_args, "profile": profile, "dataclasses": dataclasses,
                 "run_dir": tmp_path / "nb"}
    if lora:  # the notebook's LoRA section: the same function on a copy of the profile with a 10x learning rate
        namespace["lora_profile"] = notebook_call(NB02, "lora_profile", namespace)
    notebook = notebook_call(NB02, "lora_args" if lora else "training_args", namespace)
    argv = ["--train", "t.tsv", "--validation", "v.tsv", "--output-dir", str(tmp_path / "cmd")] + (["--lora"] if lora else [])
    monkeypatch.setattr(classifier, "_world_size", lambda: processes)
    command = classifier.command_training_args(parsed(classifier.add_arguments, argv), profile)
    assert comparable(command, CLASSIFIER_COMMAND_ONLY) == comparable(notebook, CLASSIFIER_COMMAND_ONLY)
    assert command.save_only_model is False and notebook.save_only_model is True
    assert (command.seed, command.data_seed) == (notebook.seed, notebook.data_seed) == (42, 42)
    assert command.average_tokens_across_devices is (processes == 1) and notebook.average_tokens_across_devices is True
    assert notebook.learning_rate == pytest.approx(profile.clf_learning_rate * (10 if lora else 1))
    # twice per epoch, as a fraction of the run: with 512 rows, evaluations fall every half epoch's steps
    assert notebook.eval_steps == notebook.save_steps == 1 / (2 * profile.clf_epochs)
    steps_per_epoch = -(-512 // (profile.clf_batch_size * processes))
    state = TrainerState()
    state.compute_steps(command, max_steps=int(profile.clf_epochs * steps_per_epoch))
    assert state.eval_steps == state.save_steps == -(-steps_per_epoch // 2)


def test_train_classifier_options_reach_the_recipe(tmp_path):
    profile = make_profile("smoke", "test", cuda=False, hub=False)
    argv = ["--train", "t", "--validation", "v", "--output-dir", str(tmp_path), "--epochs", "1.5", "--learning-rate", "3e-5",
            "--batch-size", "8", "--save-steps", "7", "--seed", "5"]
    arguments = classifier.command_training_args(parsed(classifier.add_arguments, argv), profile)
    assert (arguments.num_train_epochs, arguments.learning_rate, arguments.per_device_train_batch_size) == (1.5, 3e-5, 8)
    assert (arguments.eval_steps, arguments.save_steps, arguments.seed, arguments.data_seed) == (7, 7, 5, 5)
    # the options go in through the profile, so what the notebook derives from them follows
    assert (arguments.per_device_eval_batch_size, arguments.logging_steps) == (16, 1 / (5 * 1.5))
    argv = ["--train", "t", "--validation", "v", "--output-dir", str(tmp_path), "--epochs", "2", "--evals-per-epoch", "3",
            "--lora", "--learning-rate", "1e-3"]
    arguments = classifier.command_training_args(parsed(classifier.add_arguments, argv), profile)
    assert arguments.eval_steps == arguments.save_steps == 1 / (3 * 2)  # three times per epoch, a fraction of the run
    assert arguments.learning_rate == 1e-3  # --learning-rate is taken as given, with --lora too


def test_the_classifier_cell_is_one_call_that_runs_with_only_profile(tmp_path):
    """What an attendee copies: 02's export cell holding TrainingArguments, run with nothing but its import and
    ``profile`` (the cell's own source, not the recipe module); its function is one literal TrainingArguments call."""
    source = NB02.read_text(encoding="utf-8")
    start = source.index("from transformers import TrainingArguments")
    cell = source[start:source.index("# %%", start)]
    func = next(node for node in ast.walk(ast.parse(cell)) if isinstance(node, ast.FunctionDef))
    body = [node for node in func.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value.func.id == "TrainingArguments"
    names = {node.id for node in ast.walk(body[0].value) if isinstance(node, ast.Name)}
    assert names <= {"TrainingArguments", "profile", "output_dir", "str"}, names
    namespace = {}
    exec(compile(cell, "02-cell", "exec"), namespace)  # noqa: S102 - our own notebook's cell
    profile = make_profile("offline", "test", cuda=False, hub=False)
    arguments = namespace["classifier_training_args"](profile, tmp_path)
    assert (arguments.num_train_epochs, arguments.learning_rate, arguments.per_device_train_batch_size) == (
        profile.clf_epochs, profile.clf_learning_rate, profile.clf_batch_size)


@pytest.mark.parametrize("profile_name,route_name", [("smoke", "dense"), ("offline", "dense"), ("offline", "bnb"), ("cpu", "dense")])
def test_workshop_sft_uses_notebook_03s_config(profile_name, route_name, tmp_path):
    from workshop_utils.recipes.qlora_llama3_sft import sft_training_config

    profile = make_profile(profile_name, "test", cuda=False, hub=profile_name == "cpu")
    route = SFTRoute(route_name, profile.llm_model, "test")
    notebook = notebook_call(NB03, "sft_config", {
        "sft_training_config": sft_training_config, "profile": profile, "route": route, "SEED": 42,
        "MAX_LENGTH": profile.sft_max_length,
    })
    args = parsed(sft.add_arguments, ["--output-dir", str(tmp_path)])
    command = sft.command_config(args, profile, route, tmp_path)
    # the command checkpoints a third of the way through so that an interrupted run resumes; the notebook does not
    assert command.save_strategy == "steps" and command.save_steps == max(1, profile.sft_max_steps // 3)
    assert notebook.save_strategy == "no" and command.ddp_find_unused_parameters is False
    # everything else is equal: only the fields the command lists as its own differ
    leave_out = set(sft.COMMAND_ONLY_FIELDS)
    assert comparable(command, leave_out) == comparable(notebook, leave_out)
    differing = {k for k, v in command.to_dict().items() if notebook.to_dict()[k] != v}
    assert differing <= leave_out, differing
    assert notebook.max_steps == profile.sft_max_steps and notebook.learning_rate == profile.sft_learning_rate
    assert notebook.completion_only_loss is True and notebook.optim == "adamw_torch"  # CPU: no 8-bit optimizer
    assert notebook.gradient_checkpointing is False and notebook.use_cpu is True


def test_sft_options_reach_the_recipe(tmp_path):
    profile = make_profile("smoke", "test", cuda=False, hub=False)
    route = SFTRoute("dense", profile.llm_model, "test")
    argv = ["--output-dir", str(tmp_path), "--max-steps", "9", "--learning-rate", "1e-4", "--batch-size", "3",
            "--max-length", "64", "--seed", "7"]
    config = sft.command_config(parsed(sft.add_arguments, argv), profile, route, tmp_path)
    assert (config.max_steps, config.learning_rate, config.per_device_train_batch_size, config.max_length) == (9, 1e-4, 3, 64)
    assert (config.seed, config.data_seed, config.save_steps, config.warmup_steps) == (7, 7, 3, 1)
    # the options go through the profile, so everything the notebook derives from them follows (logging cadence)
    assert config.logging_steps == max(1, 9 // 10)


def test_the_sft_cell_runs_in_a_script_with_only_profile_and_route(tmp_path):
    """What an attendee copies: 03's export cell holding SFTConfig, run with nothing but its imports, ``profile`` and
    ``route`` (the cell's own source, not the recipe module)."""
    source = NB03.read_text(encoding="utf-8")
    cell = source[source.index("from trl import SFTConfig"):source.index("# %%", source.index("from trl import SFTConfig"))]
    profile = make_profile("offline", "test", cuda=False, hub=False)
    namespace = {}
    exec(compile(cell, "03-cell", "exec"), namespace)  # noqa: S102 - our own notebook's cell
    config = namespace["sft_training_config"](profile, SFTRoute("dense", profile.llm_model, "test"), tmp_path)
    assert (config.max_steps, config.learning_rate, config.max_length) == (
        profile.sft_max_steps, profile.sft_learning_rate, profile.sft_max_length)


def test_gpu_routes_pick_their_optimizer_and_checkpointing(tmp_path):
    """What differs by route on a GPU, checked without one: the recipe only reads the profile's fields."""
    import dataclasses

    from workshop_utils.recipes.qlora_llama3_sft import sft_training_config

    # fp16/bf16 off so that TrainingArguments' own check for a GPU does not fire on this CPU machine
    profile = dataclasses.replace(make_profile("cpu", "test", cuda=False, hub=True), device="cuda", precision="fp32")
    unsloth = sft_training_config(profile, SFTRoute("unsloth", "m", "test"), tmp_path)
    bnb = sft_training_config(profile, SFTRoute("bnb", "m", "test"), tmp_path)
    assert (unsloth.optim, unsloth.gradient_checkpointing) == ("adamw_8bit", False)  # Unsloth checkpoints itself
    assert (bnb.optim, bnb.gradient_checkpointing) == ("paged_adamw_8bit", True)
    assert bnb.gradient_checkpointing_kwargs == {"use_reentrant": False}


def test_lora_alpha_keeps_the_profiles_scale_when_r_changes():
    from peft import PeftModel

    from workshop_utils.assets import tiny_llama_path
    from workshop_utils.recipes.qlora_llama3_sft import LORA_TARGETS, add_lora, load_model

    profile = make_profile("smoke", "test", cuda=False, hub=False)
    route = SFTRoute("dense", str(tiny_llama_path()), "test")
    model, _ = load_model(route, profile, 64)
    peft_model = add_lora(model, route, profile, r=2 * profile.lora_r)
    assert isinstance(peft_model, PeftModel)
    config = peft_model.peft_config["default"]
    assert config.r == 2 * profile.lora_r and config.lora_alpha == 2 * profile.lora_alpha
    assert set(config.target_modules) == set(LORA_TARGETS)
