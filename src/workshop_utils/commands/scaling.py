"""Which parallel layout ``accelerate launch`` started, and how a model must be loaded in it.

``accelerate launch --config_file configs/accelerate/X.yaml ...`` turns the config into environment variables
for every process (``accelerate.utils.launch.prepare_multi_gpu_env`` / ``prepare_deepspeed_cmd_env``), and
torchrun adds each process's ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. The functions here read only that
mapping, so tests check every layout on a CPU:

* ``single``: one process; the recipe's own loading is right.
* ``ddp``: several processes, a whole copy of the model in each: ``device_map={"": local rank}`` puts each
  copy on its own GPU (a 4-bit model is quantized where it is placed, so it must be placed at load time).
* ``fsdp``: weights, gradients and optimizer states split over the processes. No ``device_map`` (FSDP places
  the shards); 4-bit weights stored in the compute dtype (``bnb_4bit_quant_storage``), or FSDP2 cannot split
  them (huggingface/accelerate#3983).
* ``deepspeed``: ZeRO stage 3 splits like FSDP and loads like it; stages 1 and 2 keep whole weights per
  process and load like DDP.

``transformers`` 5 ignores ``low_cpu_mem_usage`` (``from_pretrained`` pops it unused: it always loads
without a second copy), so no layout sets it; with ``fsdp_cpu_ram_efficient_loading`` only the first process
of each machine reads the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

LAYOUTS = ("single", "ddp", "fsdp", "deepspeed")
_TRUE = ("y", "yes", "t", "true", "on", "1")  # what accelerate's str_to_bool takes as true


def _flag(env: Mapping[str, str], name: str) -> bool:
    return str(env.get(name, "false")).strip().lower() in _TRUE


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = str(env.get(name, "")).strip()
    return int(value) if value.lstrip("-").isdigit() else default


@dataclass(frozen=True)
class Launch:
    """What the launcher told this process: the layout, its place in it, and the settings loading depends on."""

    layout: str  # one of LAYOUTS
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    mixed_precision: str = "no"  # "no", "fp16", "bf16" (ACCELERATE_MIXED_PRECISION)
    fsdp_version: int | None = None
    zero_stage: int | None = None
    activation_checkpointing: bool = False  # FSDP's own (FSDP_ACTIVATION_CHECKPOINTING)
    cpu_ram_efficient_loading: bool = False

    @property
    def shards_weights(self) -> bool:
        """Whether each process holds only a slice of the weights (FSDP, ZeRO-3)."""
        return self.layout == "fsdp" or (self.layout == "deepspeed" and self.zero_stage == 3)

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0


def read_launch(env: Mapping[str, str]) -> Launch:
    """The layout of this process from its environment (``os.environ`` in a launched run).

    The names are accelerate 1.15's: ``ACCELERATE_USE_FSDP`` / ``FSDP_VERSION`` (unset means 1) and
    ``ACCELERATE_USE_DEEPSPEED`` / ``ACCELERATE_DEEPSPEED_ZERO_STAGE`` (unset means 2, DeepSpeedPlugin's
    default); torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``."""
    world = max(1, _int(env, "WORLD_SIZE", 1))
    common = {"world_size": world, "rank": max(0, _int(env, "RANK", 0)), "local_rank": max(0, _int(env, "LOCAL_RANK", 0)),
              "mixed_precision": str(env.get("ACCELERATE_MIXED_PRECISION", "no")).lower()}
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        return Launch("deepspeed", zero_stage=_int(env, "ACCELERATE_DEEPSPEED_ZERO_STAGE", 2), **common)
    if _flag(env, "ACCELERATE_USE_FSDP"):
        return Launch("fsdp", fsdp_version=_int(env, "FSDP_VERSION", 1),
                      activation_checkpointing=_flag(env, "FSDP_ACTIVATION_CHECKPOINTING"),
                      cpu_ram_efficient_loading=_flag(env, "FSDP_CPU_RAM_EFFICIENT_LOADING"), **common)
    return Launch("ddp" if world > 1 else "single", **common)


def compute_dtype(launch: Launch, default=None):
    """The dtype the weights compute in: the launch's mixed precision, else ``default`` (None: float32)."""
    import torch

    named = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(launch.mixed_precision)
    return named or default or torch.float32


def quantization_kwargs(launch: Launch, default_dtype=None) -> dict[str, Any]:
    """``BitsAndBytesConfig`` arguments for 4-bit NF4 in this layout (notebook 03's settings).

    Where the weights are split (FSDP, ZeRO-3) the packed 4-bit weights are stored in the compute dtype, so that
    they are float tensors FSDP can shard like the layers around them; the default storage (uint8) is kept
    elsewhere, where nothing shards them."""
    dtype = compute_dtype(launch, default_dtype)
    kwargs = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
              "bnb_4bit_compute_dtype": dtype}
    if launch.shards_weights:
        kwargs["bnb_4bit_quant_storage"] = dtype
    return kwargs


def loading_kwargs(launch: Launch, *, load_in_4bit: bool, on_gpu: bool = True, default_dtype=None) -> dict[str, Any]:
    """Keyword arguments for ``AutoModelForCausalLM.from_pretrained`` in this layout.

    * ``dtype``: the compute dtype (the launch's mixed precision, else ``default_dtype``);
    * ``device_map``: ``{"": local rank}`` where every process holds whole weights on its GPU (single, DDP,
      ZeRO-1/2); none where FSDP or ZeRO-3 place the shards, nor on a CPU;
    * ``quantization_config``: a ``BitsAndBytesConfig`` from :func:`quantization_kwargs` when ``load_in_4bit``.
    """
    kwargs: dict[str, Any] = {"dtype": compute_dtype(launch, default_dtype)}
    if on_gpu and not launch.shards_weights:
        kwargs["device_map"] = {"": launch.local_rank}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization_kwargs(launch, default_dtype))
    return kwargs


def training_overrides(launch: Launch) -> dict[str, Any]:
    """Fields of the recipe's ``SFTConfig`` this layout must change (``dataclasses.replace`` after the call).

    * FSDP with its own activation checkpointing: the Trainer refuses ``gradient_checkpointing=True`` as well;
    * weights split over processes: plain AdamW. bitsandbytes' 8-bit optimizers (the recipe's
      ``paged_adamw_8bit`` on a GPU) do not work on sharded parameters (bitsandbytes#89, LlamaFactory#5619).
    """
    changes: dict[str, Any] = {}
    if launch.layout == "fsdp" and launch.activation_checkpointing:
        changes.update(gradient_checkpointing=False, gradient_checkpointing_kwargs=None)
    if launch.shards_weights:
        changes["optim"] = "adamw_torch"
    return changes


def allows_unsloth(launch: Launch) -> bool:
    """Unsloth's loader puts a whole model on one GPU; where weights are split, ``workshop sft`` takes the bnb route."""
    return not launch.shards_weights


def load_sharded(model_id: str, launch: Launch, *, load_in_4bit: bool):
    """(model, tokenizer) for FSDP / ZeRO-3, where notebook 03's loaders cannot serve: they pin each process's
    copy to its GPU (``device_map``) and keep the uint8 storage.

    No ``prepare_model_for_kbit_training`` here: it casts the norms to float32, and FSDP needs one dtype per
    wrapped layer (TRL's ``prepare_peft_model`` skips it for sharded QLoRA too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_id, **loading_kwargs(launch, load_in_4bit=load_in_4bit, on_gpu=True))
    return model, AutoTokenizer.from_pretrained(model_id)


def match_adapter_dtype(model, launch: Launch, *, load_in_4bit: bool) -> int:
    """After LoRA is added: with sharded 4-bit weights, bring the adapters to the storage dtype (peft makes them
    float32), so each wrapped layer holds one dtype, as TRL does with ``autocast_adapter_dtype=False``.
    Returns how many tensors were cast (0 in every other layout)."""
    if not (launch.shards_weights and load_in_4bit):
        return 0
    dtype, cast = compute_dtype(launch), 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += 1
    return cast


def describe(launch: Launch) -> str:
    """One line for the log: the layout and what it means for the weights."""
    what = {
        "single": "one process",
        "ddp": f"data parallel, {launch.world_size} processes, a whole copy of the model in each",
        "fsdp": f"FSDP{launch.fsdp_version}, weights split over {launch.world_size} processes",
        "deepspeed": f"DeepSpeed ZeRO-{launch.zero_stage}, {launch.world_size} processes"
                     + (", weights split" if launch.shards_weights else ", whole weights in each"),
    }[launch.layout]
    return f"layout '{launch.layout}': {what}, mixed precision {launch.mixed_precision}"
