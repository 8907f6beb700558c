"""Notebook 04's merge (its export cells, ``recipes/inference_pipeline.py``): ``merge_adapter`` writes
base + scale * B @ A as safetensors shards without holding a whole copy of the model, and ``merge_check``
accepts a correct merge and refuses a broken one. A random LoRA adapter on the tiny Llama stands in for
notebook 03's adapter."""

import copy
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

LORA_R, LORA_ALPHA = 4, 8  # scale lora_alpha / r = 2: a merge that forgets it adds half the update
QUESTIONS = ["What is glaucoma?", "What are the symptoms of anemia?", "How is asthma treated?"]
ANSWERS = ["Glaucoma is a group of eye diseases that damage the optic nerve.",
           "Anemia can cause fatigue, weakness and pale skin.",
           "Asthma is treated with inhalers that open the airways."]


def random_adapter(base, folder, seed=0):
    """A peft LoRA adapter on every linear layer of the Llama blocks, with random non-zero B, saved to folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from workshop_utils.recipes.qlora_llama3_sft import LORA_TARGETS

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
                           LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (the adapter would change nothing)
                param.normal_(0.0, 0.02)
    model.save_pretrained(str(folder))
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    from workshop_utils.assets import tiny_llama_path

    return tiny_llama_path()


@pytest.fixture(scope="module")
def merged(tiny, tmp_path_factory):
    """(peft model, adapter folder, merged folder): the tiny Llama's adapter merged in several shards."""
    from workshop_utils.recipes.inference_pipeline import merge_adapter

    root = tmp_path_factory.mktemp("merge")
    peft_model = random_adapter(tiny, root / "adapter")
    out = merge_adapter(root / "adapter", root / "merged", base_model=tiny, dtype=torch.float32, max_shard_size="300KB")
    return peft_model, root / "adapter", out


def load_weights(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_merged_weights_are_base_plus_scaled_update(tiny, merged):
    peft_model, _, folder = merged
    base, out = load_weights(tiny), load_weights(folder)
    assert out.keys() == base.keys()
    adapted = set()
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            key = name.removeprefix("base_model.model.") + ".weight"
            lora_a, lora_b = module.lora_A["default"].weight, module.lora_B["default"].weight
            assert module.scaling["default"] == LORA_ALPHA / LORA_R
            torch.testing.assert_close(out[key], base[key] + LORA_ALPHA / LORA_R * lora_b @ lora_a, rtol=1e-5, atol=1e-6)
            adapted.add(key)
    assert len(adapted) == 7 * peft_model.config.num_hidden_layers  # every adapted linear layer
    assert all(torch.equal(out[k], base[k]) for k in base.keys() - adapted)  # the rest untouched
    # and what peft's own merge_and_unload() makes
    peft_merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    for key in adapted:
        torch.testing.assert_close(out[key], peft_merged[key], rtol=1e-5, atol=1e-6)


def test_merged_folder_is_sharded_safetensors_that_transformers_loads(merged):
    from transformers import AutoModelForCausalLM

    from workshop_utils.answers import saved_weight_files

    peft_model, _, folder = merged
    files = saved_weight_files(folder)
    assert len(files) > 1 and all(f.endswith(".safetensors") for f in files), files
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == files
    model, info = AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, peft_model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_merge_check_passes_a_correct_merge_and_fails_broken_ones(tiny, merged, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workshop_utils.recipes import inference_pipeline as recipe

    peft_model, adapter, folder = merged
    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    adapter_lp = recipe.reference_logprobs(peft_model, tokenizer, QUESTIONS, ANSWERS)
    with peft_model.disable_adapter():
        base_lp = recipe.reference_logprobs(peft_model, tokenizer, QUESTIONS, ANSWERS)

    def check(path, logprobs=None):
        if logprobs is None:
            logprobs = recipe.reference_logprobs(AutoModelForCausalLM.from_pretrained(str(path)), tokenizer, QUESTIONS, ANSWERS)
        return recipe.merge_check(adapter_lp, logprobs, base_lp, tolerance=recipe.MERGE_TOLERANCE[torch.float32])

    good = check(folder)
    assert good["ok"] and good["largest_difference"] < 1e-4 and abs(good["kept"] - 1) < 1e-3, good
    assert good["adapter_effect"] > 0.1, "the random adapter must change something for the test to mean anything"
    # a merge that forgot the scale lora_alpha / r
    real = recipe.lora_updates
    monkeypatch.setattr(recipe, "lora_updates", lambda d: {k: (a, b, 1.0) for k, (a, b, _) in real(d).items()})
    unscaled = check(recipe.merge_adapter(adapter, tmp_path / "unscaled", base_model=tiny, dtype=torch.float32))
    assert not unscaled["ok"] and unscaled["kept"] < recipe.KEPT_RANGE[0], unscaled
    nothing = check(None, base_lp)  # a merge that merged nothing is the base model
    assert not nothing["ok"] and nothing["kept"] == 0.0, nothing


def test_merge_refuses_a_base_it_cannot_merge_into(tiny, merged, tmp_path):
    import shutil

    from workshop_utils import WorkshopError
    from workshop_utils.recipes.inference_pipeline import merge_adapter

    _, adapter, _ = merged
    quantised = tmp_path / "quantised"
    shutil.copytree(tiny, quantised)
    config = json.loads((quantised / "config.json").read_text())
    (quantised / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "bitsandbytes"}}))
    with pytest.raises(WorkshopError, match="16-bit base model"):
        merge_adapter(adapter, tmp_path / "out", base_model=quantised, dtype=torch.float32)


# --------------------------------------------------------------------------- the memory contract
MEASURE = r"""
import gc, json, sys
import torch
from workshop_utils.recipes.inference_pipeline import merge_adapter

base, adapter, out = sys.argv[1:4]


def status(field):  # bytes, from /proc/self/status
    return 1024 * int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])


def peak_rise(step):
    # the most the resident set grew above where it stood before step() (VmHWM reset by clear_refs)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start = status("VmRSS")
    step()
    return status("VmHWM") - start


def naive():  # the whole model in memory, as merge_and_unload() on a loaded model needs
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    model.merge_and_unload().save_pretrained(out + "/naive", max_shard_size="8MB")


merge = lambda: merge_adapter(adapter, out + "/merged", base_model=base, dtype=torch.float32, max_shard_size="8MB")
merge()  # first call: lazy imports and one-off costs
print(json.dumps({"merge_adapter": peak_rise(merge), "naive": peak_rise(naive)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident set from /proc (Linux)")
def test_merge_never_holds_a_whole_copy_of_the_model(tiny, tmp_path):
    """The contract that lets Llama 3 8B (16 GB in bf16) merge in a Colab's 12.7 GB of RAM: merge_adapter's
    resident set grows by less than half the model's weights, so it never holds one whole copy, let alone
    two. The same measurement of the plain way (load, merge_and_unload, save_pretrained) must see at least
    one whole copy, which shows the measurement would catch a merge that loaded the model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(tiny))
    config.update({"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 20})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    model.save_pretrained(str(tmp_path / "base"), max_shard_size="8MB")  # several files, as Llama 3 8B has
    del model
    random_adapter(tmp_path / "base", tmp_path / "adapter")
    # every allocation over 64 KiB straight from mmap, so freed memory leaves the resident set at once
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "base"), str(tmp_path / "adapter"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rise = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"model {model_bytes / 2**20:.0f} MiB; resident set rose by {rise['merge_adapter'] / 2**20:.0f} MiB "
          f"(merge_adapter), {rise['naive'] / 2**20:.0f} MiB (load + merge_and_unload + save)")
    assert rise["naive"] >= 0.9 * model_bytes, f"the measurement missed a whole loaded model: {rise}"
    assert rise["merge_adapter"] < 0.5 * model_bytes, (
        f"merge_adapter held {rise['merge_adapter'] / model_bytes:.0%} of the model's weights at once")
