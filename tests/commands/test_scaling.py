"""From one process to many: the accelerate configs in configs/accelerate, the layout each one starts (read by
``workshop_utils.commands.scaling`` from the environment accelerate's launcher builds), and ``workshop sft``
on two machines simulated on this one, compared with the same two processes on one machine.

No GPU here: FSDP and DeepSpeed are checked up to the loading arguments they lead to; the launches that run
are DDP over gloo on CPU processes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from unittest import mock

import pytest

from conftest import ROOT, free_port

CONFIGS = ROOT / "configs" / "accelerate"
BIN = Path(sys.executable).parent
SMALL = ["--max-steps", "4", "--train-rows", "32", "--eval-rows", "4", "--max-new-tokens", "8", "--batch-size", "4"]
# what each config must start: accelerate's distributed type, processes, FSDP version / ZeRO stage, our layout
EXPECTED = {
    "multi_gpu_ddp.yaml": ("MULTI_GPU", 8, None, None, "ddp"),
    "fsdp2_llama3_8b_full.yaml": ("FSDP", 8, 2, None, "fsdp"),
    "fsdp2_qlora_70b.yaml": ("FSDP", 2, 2, None, "fsdp"),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 8, None, 3, "deepspeed"),
}
FSDP_CONFIGS = [name for name, expected in EXPECTED.items() if expected[0] == "FSDP"]


def cli_module() -> str:
    """The module behind the `workshop` command, as pyproject.toml declares it (``accelerate launch -m`` runs it)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    return scripts["workshop"].split(":")[0]


# --------------------------------------------------------------------------- the config files
def test_every_config_is_checked():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_reader(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(CONFIGS / name))
    kind, processes, fsdp_version, zero_stage, _ = EXPECTED[name]
    assert config.distributed_type == DistributedType[kind]
    assert (config.num_processes, config.num_machines, config.mixed_precision) == (processes, 1, "bf16")
    assert config.fsdp_config.get("fsdp_version") == fsdp_version
    assert config.deepspeed_config.get("zero_stage") == zero_stage


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_keys_are_options_of_accelerate_launch(name):
    """A misspelt key would be ignored without a word: every fsdp_/deepspeed key must be a launch option."""
    import yaml
    from accelerate.commands.launch import launch_command_parser

    options = vars(launch_command_parser().parse_args(["x.py"]))
    raw = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    nested = {**raw.get("fsdp_config", {}), **raw.get("deepspeed_config", {})}
    assert nested or raw["distributed_type"] == "MULTI_GPU"
    assert [key for key in nested if key not in options] == []


@pytest.mark.parametrize("name", FSDP_CONFIGS)
def test_fsdp_configs_build_accelerates_plugin(name):
    """accelerate's own FSDP plugin, built from the environment the launcher gives each process."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers.models.llama import modeling_llama

    env = launched_env(CONFIGS / name, rank=0)
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("FSDP_")}):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FSDP2, full shard
    assert plugin.cpu_ram_efficient_loading and plugin.activation_checkpointing
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert hasattr(modeling_llama, "LlamaDecoderLayer")  # the class the wrap policy looks for exists


# --------------------------------------------------------------------------- layout and loading arguments
def launched_env(path: Path, rank: int) -> dict[str, str]:
    """The environment of process ``rank`` under ``accelerate launch --config_file path``: accelerate's own
    config-to-environment code (what its launcher runs), then what torchrun adds per process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", cli_module(), "sft"])
    with mock.patch.dict(os.environ, {}, clear=True):  # only what the config sets, not this test's environment
        args, defaults, _ = _validate_launch_command(args)
        args.main_process_port = 0  # a free port: the launcher checks the port is not in use
        if args.use_deepspeed:
            args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
            env = prepare_deepspeed_cmd_env(args)[1]
        else:
            env = prepare_multi_gpu_env(args)
    per_machine = int(args.nproc_per_node)
    return {**env, "WORLD_SIZE": str(per_machine * args.num_machines), "RANK": str(rank), "LOCAL_RANK": str(rank % per_machine)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_config_starts_its_layout(name):
    from workshop_utils.commands.scaling import read_launch

    _, processes, fsdp_version, zero_stage, layout = EXPECTED[name]
    launch = read_launch(launched_env(CONFIGS / name, rank=1))
    assert (launch.layout, launch.world_size, launch.rank, launch.local_rank) == (layout, processes, 1, 1)
    assert (launch.fsdp_version, launch.zero_stage, launch.mixed_precision) == (fsdp_version, zero_stage, "bf16")
    assert launch.shards_weights == (layout != "ddp")


def test_ddp_puts_a_whole_copy_on_each_processs_gpu():
    import torch

    from workshop_utils.commands.scaling import loading_kwargs, read_launch, training_overrides

    launch = read_launch(launched_env(CONFIGS / "multi_gpu_ddp.yaml", rank=5))
    kwargs = loading_kwargs(launch, load_in_4bit=True)
    assert kwargs["device_map"] == {"": 5} and kwargs["dtype"] == torch.bfloat16
    assert kwargs["quantization_config"].bnb_4bit_quant_storage == torch.uint8  # nothing shards it: the default
    assert training_overrides(launch) == {}
    assert "device_map" not in loading_kwargs(launch, load_in_4bit=False, on_gpu=False)  # CPU processes


@pytest.mark.parametrize("name", ["fsdp2_llama3_8b_full.yaml", "fsdp2_qlora_70b.yaml", "deepspeed_zero3.yaml"])
def test_sharded_layouts_load_without_device_map_and_store_4bit_in_the_compute_dtype(name):
    import torch

    from workshop_utils.commands.scaling import allows_unsloth, loading_kwargs, read_launch

    launch = read_launch(launched_env(CONFIGS / name, rank=1))
    dense, four_bit = loading_kwargs(launch, load_in_4bit=False), loading_kwargs(launch, load_in_4bit=True)
    assert "device_map" not in dense and "device_map" not in four_bit  # the sharding places the weights
    assert "quantization_config" not in dense and dense["dtype"] == torch.bfloat16
    bnb = four_bit["quantization_config"]
    assert bnb.bnb_4bit_quant_storage == bnb.bnb_4bit_compute_dtype == torch.bfloat16  # accelerate#3983
    assert not allows_unsloth(launch)


def test_training_overrides_per_layout():
    from workshop_utils.commands.scaling import read_launch, training_overrides

    fsdp = training_overrides(read_launch(launched_env(CONFIGS / "fsdp2_llama3_8b_full.yaml", rank=0)))
    zero3 = training_overrides(read_launch(launched_env(CONFIGS / "deepspeed_zero3.yaml", rank=0)))
    # FSDP checkpoints activations itself (the Trainer refuses both); no 8-bit optimizer on sharded weights
    assert fsdp == {"gradient_checkpointing": False, "gradient_checkpointing_kwargs": None, "optim": "adamw_torch"}
    assert zero3 == {"optim": "adamw_torch"}


def test_layouts_from_listed_environments():
    """Cases no config here starts: accelerate's defaults for unset variables, ZeRO-2, a plain run."""
    from workshop_utils.commands.scaling import describe, loading_kwargs, read_launch

    zero2 = read_launch({"ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "RANK": "6"})
    assert (zero2.layout, zero2.zero_stage, zero2.shards_weights) == ("deepspeed", 2, False)  # DeepSpeedPlugin's default
    assert loading_kwargs(zero2, load_in_4bit=False)["device_map"] == {"": 2}
    fsdp1 = read_launch({"ACCELERATE_USE_FSDP": "1", "WORLD_SIZE": "2"})
    assert (fsdp1.layout, fsdp1.fsdp_version) == ("fsdp", 1)
    single = read_launch({})
    assert (single.layout, single.world_size, single.is_main_process) == ("single", 1, True)
    assert "FSDP2" in describe(read_launch({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "8"}))


def test_adapters_take_the_storage_dtype_only_under_sharded_4bit():
    import torch

    from workshop_utils.commands.scaling import match_adapter_dtype, read_launch

    def model():
        frozen, adapter = torch.nn.Linear(4, 4).to(torch.bfloat16), torch.nn.Linear(4, 2)
        frozen.requires_grad_(False)
        return torch.nn.Sequential(frozen, adapter)

    sharded = read_launch({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "2",
                           "ACCELERATE_MIXED_PRECISION": "bf16"})
    m = model()
    assert match_adapter_dtype(m, sharded, load_in_4bit=True) == 2  # the adapter's weight and bias
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    ddp = read_launch({"WORLD_SIZE": "2", "ACCELERATE_MIXED_PRECISION": "bf16"})
    assert match_adapter_dtype(model(), ddp, load_in_4bit=True) == 0
    assert match_adapter_dtype(model(), sharded, load_in_4bit=False) == 0


# --------------------------------------------------------------------------- the wiring in `workshop sft`
def test_sft_loads_sharded_qlora_without_device_map_in_bf16_storage(monkeypatch):
    """`workshop sft`'s loading under the FSDP-QLoRA config, short of FSDP itself (a CPU has none): bitsandbytes'
    4-bit weights stored in bf16, LoRA adapters in bf16 too (one dtype per layer), no per-process device map."""
    import torch

    from workshop_utils.assets import tiny_llama_path
    from workshop_utils.commands import sft
    from workshop_utils.profiles import active_profile
    from workshop_utils.routes import SFTRoute

    env = launched_env(CONFIGS / "fsdp2_qlora_70b.yaml", rank=0)
    for key in [k for k in env if k.startswith(("ACCELERATE_", "FSDP_"))]:
        monkeypatch.setenv(key, env[key])
    model, _ = sft.load_for_route(SFTRoute("bnb", str(tiny_llama_path()), "test"), active_profile(), max_length=64, lora_r=4)
    packed = [p for p in model.parameters() if p.__class__.__name__ == "Params4bit"]
    assert packed and {p.dtype for p in packed} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.bfloat16}
    assert getattr(model.base_model.model, "hf_device_map", None) is None


def test_sft_config_takes_the_layouts_overrides(monkeypatch, tmp_path):
    """Notebook 03's GPU config (bnb route: paged 8-bit AdamW, gradient checkpointing) under FSDP with its own
    activation checkpointing: exactly the fields training_overrides names change, nothing else."""
    import argparse
    import dataclasses

    from workshop_utils.commands import scaling, sft
    from workshop_utils.profiles import active_profile
    from workshop_utils.routes import SFTRoute

    parser = argparse.ArgumentParser()
    sft.add_arguments(parser)
    args = parser.parse_args(["--output-dir", str(tmp_path)])
    profile, route = dataclasses.replace(active_profile(), device="cuda", precision="fp32"), SFTRoute("bnb", "unused", "test")
    plain = sft.command_config(args, profile, route, tmp_path)
    fsdp = scaling.read_launch(launched_env(CONFIGS / "fsdp2_llama3_8b_full.yaml", rank=0))
    monkeypatch.setattr(scaling, "read_launch", lambda env: fsdp)
    sharded = sft.command_config(args, profile, route, tmp_path)
    changed = {f.name: getattr(sharded, f.name) for f in dataclasses.fields(plain) if getattr(plain, f.name) != getattr(sharded, f.name)}
    assert plain.gradient_checkpointing and plain.optim == "paged_adamw_8bit"  # what the overrides must undo
    assert changed == scaling.training_overrides(fsdp)


# --------------------------------------------------------------------------- two processes: one machine, two machines
def _launch(*launcher_args: str) -> list[str]:
    return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", *launcher_args,
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", cli_module()]


def _sft_command(launcher: list[str], out: Path) -> list[str]:
    from workshop_utils.assets import tiny_llama_path

    return [*launcher, "sft", "--output-dir", str(out), *SMALL, "--model", str(tiny_llama_path()), "--no-unsloth"]


def _run_together(commands: list[list[str]], timeout: int) -> list[subprocess.CompletedProcess]:
    """Start the commands at once (the launchers of a multi-machine run wait for each other) and wait for all.
    On a timeout every process they started goes (torchrun's workers lead sessions of their own)."""
    env = {**os.environ, "WORKSHOP_PROFILE": "smoke", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for cmd in commands]
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    except subprocess.TimeoutExpired:
        import psutil

        for proc in procs:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
        raise
    return [subprocess.CompletedProcess(cmd, proc.returncode, out, err) for cmd, proc, (out, err) in zip(commands, procs, outputs)]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """`workshop sft` in two CPU processes: on one machine, then on two machines simulated on this one (two
    launchers, machine ranks 0 and 1, meeting at 127.0.0.1). Both machines see one filesystem, so both get
    the same --output-dir: only the main process (global rank 0) writes there."""
    base = tmp_path_factory.mktemp("scaling")
    one = base / "one-machine"
    # about 30 s each; a hang here was a barrier one process skipped (see sft.train_and_score's before.json)
    single = _run_together([_sft_command(_launch("--num_machines", "1", "--main_process_port", str(free_port())), one)], 240)
    two, port = base / "two-machines", str(free_port())
    machines = [_launch("--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                        "--main_process_port", port) for rank in (0, 1)]
    double = _run_together([_sft_command(machine, two) for machine in machines], 300)
    return {"one": (one, single[0]), "two": (two, double)}


def test_accelerate_launch_two_cpu_processes(two_process_runs):
    out, done = two_process_runs["one"]
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 4
    assert (out / "adapter_model.safetensors").is_file()
    assert done.stdout.count("ROUGE-L") == 1 and done.stdout.count("route 'dense'") == 1  # only the main process reports


def _logged(stdout: str) -> list[dict]:
    """The Trainer's per-step logs (loss, grad_norm, tokens) the main process printed."""
    return [ast.literal_eval(line) for line in stdout.splitlines() if line.startswith("{'loss'")]


TIMINGS = ("train_seconds", "tokens_per_second", "peak_memory_bytes")


def test_two_machines_train_as_two_processes_on_one(two_process_runs):
    from safetensors.torch import load_file
    import torch

    (one, single), (two, (machine0, machine1)) = two_process_runs["one"], two_process_runs["two"]
    assert single.returncode == 0, single.stderr[-3000:]
    assert machine0.returncode == 0 and machine1.returncode == 0, machine0.stderr[-2000:] + machine1.stderr[-2000:]
    assert [p.relative_to(two) for p in two.rglob("adapter_model.safetensors")] == [Path("adapter_model.safetensors")]
    assert machine0.stdout.count("ROUGE-L") == 1 and "ROUGE-L" not in machine1.stdout  # global rank 0 reports
    figures = [{k: v for k, v in json.loads((out / "metrics.json").read_text()).items() if k not in TIMINGS}
               for out in (one, two)]
    assert figures[1]["processes"] == 2 and figures[1]["steps"] == 4
    assert figures[1] == figures[0]  # NLL and ROUGE-L before/after, tokens, steps...: the same training
    logged = [_logged(run.stdout) for run in (single, machine0)]
    assert len(logged[0]) == 4
    assert [[s[k] for k in ("loss", "grad_norm", "num_tokens")] for s in logged[1]] == \
           [[s[k] for k in ("loss", "grad_norm", "num_tokens")] for s in logged[0]]
    adapters = [load_file(str(out / "adapter_model.safetensors")) for out in (one, two)]
    assert adapters[0].keys() == adapters[1].keys()
    for key, tensor in adapters[0].items():
        torch.testing.assert_close(adapters[1][key], tensor)
