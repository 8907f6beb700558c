"""Which implementation trains a chat model on this machine, and TRL's loss on a machine without a GPU.

Three routes, chosen by :func:`choose_route` from the profile:

* ``unsloth``: CUDA GPU and Unsloth importable. Unsloth's ``FastLanguageModel`` loads the model in 4-bit
  and adds LoRA adapters with its own fused kernels and gradient checkpointing (QLoRA, fastest).
* ``bnb``: CUDA GPU without Unsloth (or ``--no-unsloth``), or 4-bit asked for on a CPU. transformers +
  bitsandbytes 4-bit NF4 + peft (QLoRA, the reference implementation).
* ``dense``: no GPU (or a GPU profile without 4-bit). Plain peft LoRA on weights held as dense 16/32-bit
  tensors, float32 on a CPU (notebook 03 measures why not 4-bit there). Dense says how the weights are held,
  not where they came from: offline, SmolLM2 comes from a Q4_1 GGUF file, dequantised (assets.smollm2_path).

Every route trains LoRA adapters; they differ in how the frozen base weights are stored and who runs them.

Notebook 03's ``load_model`` / ``add_lora`` (its export cells, :mod:`workshop_utils.recipes.qlora_llama3_sft`)
do what each route means.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

@dataclass(frozen=True)
class SFTRoute:
    """Which implementation trains, on which model, and why."""

    name: str  # "unsloth", "bnb" or "dense"
    model: str
    reason: str

    def describe(self) -> str:
        what = {
            "unsloth": "QLoRA through Unsloth (4-bit, Unsloth kernels)",
            "bnb": "QLoRA through transformers + bitsandbytes + peft (4-bit NF4)",
            "dense": "LoRA through peft on the model's dense (16/32-bit) weights",
        }[self.name]
        return f"route '{self.name}': {what}, because {self.reason}"


def unsloth_available() -> bool:
    """Whether the unsloth package is installed (it is imported only when the path uses it)."""
    return importlib.util.find_spec("unsloth") is not None


def choose_route(profile, *, use_unsloth: bool = True, model: str | None = None, load_in_4bit: bool | None = None) -> SFTRoute:
    """The SFT path for this profile. On a GPU with Unsloth this imports unsloth (it must come early).

    ``load_in_4bit`` overrides the profile's choice; on a CPU it selects the bitsandbytes NF4 path.
    """
    if load_in_4bit is not None:
        profile = dataclasses.replace(profile, load_in_4bit=load_in_4bit)
    if profile.device == "cuda":
        if not profile.load_in_4bit:
            return SFTRoute("dense", model or profile.llm_model_bnb, "the profile does not load the model in 4-bit")
        if not use_unsloth:
            return SFTRoute("bnb", model or profile.llm_model_bnb, "Unsloth was switched off (--no-unsloth)")
        if not unsloth_available():
            return SFTRoute("bnb", model or profile.llm_model_bnb, "a CUDA GPU is here but Unsloth is not installed")
        try:
            import unsloth  # noqa: F401  (patches transformers: import it before them, and only here)
        except Exception as exc:  # a broken install must not stop the workshop: fall back to the reference path
            return SFTRoute("bnb", model or profile.llm_model_bnb, f"Unsloth is installed but failed to import ({exc.__class__.__name__})")
        return SFTRoute("unsloth", model or profile.llm_model, "a CUDA GPU is here and Unsloth imports")
    if profile.load_in_4bit:
        return SFTRoute("bnb", model or profile.llm_model, "4-bit was asked for on a CPU: bitsandbytes runs NF4 on CPUs too")
    why = ("there is no CUDA GPU, and on a CPU 4-bit NF4 saves memory but not time (notebook 03 measures both), "
           "so the weights stay float32")
    return SFTRoute("dense", model or profile.llm_model, why)


# --------------------------------------------------------------------------- TRL's loss on CPU
class TorchTokenLogProbs:
    """TRL's per-token log-probabilities in plain PyTorch, for machines without a GPU.

    TRL 1.15's ``SFTTrainer`` computes the loss with a fused LM head whose inner loop is a Triton kernel;
    Triton runs on GPUs only, so on a CPU training stops with "0 active drivers". This class has the same
    ``apply`` signature and outputs; it builds the full logits (fine for the small CPU models) and lets
    autograd do the backward pass.
    """

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("log_probs",)):
        import torch

        z = hidden.float() @ weight.float().t()
        if bias is not None:
            z = z + bias.float()
        z = z * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        z = z / temperature
        logp = torch.log_softmax(z, dim=-1)
        token = logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        with torch.no_grad():  # the metrics TRL logs: no autograd graph (it would hold another logits-sized tensor)
            entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
            sq = torch.logsumexp(2 * logp, dim=-1) if "log_sum_sq_probs" in outputs else None
            mean = z.mean(-1) if "mean_logits" in outputs else None
            top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
        return token, entropy, sq, mean, top1


def use_torch_loss_on_cpu() -> bool:
    """Without CUDA, make TRL's SFTTrainer compute its loss in PyTorch (see TorchTokenLogProbs).

    Returns True when the switch was made. On a GPU nothing changes: TRL's Triton kernel is faster and
    never builds the full (tokens x vocabulary) logits.
    """
    import torch

    if torch.cuda.is_available():
        return False
    import trl.trainer.utils as trl_utils

    if not hasattr(trl_utils, "_ChunkedLogProbFunction"):  # a TRL without the fused head needs nothing
        return False
    trl_utils._ChunkedLogProbFunction = TorchTokenLogProbs
    return True
