# %% [markdown]
# ## Appendix (optional) · QLoRA on a CPU: what 4-bit buys and what it costs
#
# The lesson ends with the self-check above; this appendix is a measurement you can skip (the exercises
# below do not need it). It runs only without a GPU.
#
# On a GPU the run above already was QLoRA: 4-bit weights, 16-bit compute. On a CPU it trained in float32.
# bitsandbytes runs NF4 on CPUs too, so here is the measurement behind that choice: the same model and
# adapters loaded both ways, from the same start, each trained for a few steps on the same rows.
#
# (Offline, both rows start from the Q4_1 file's values: the float32 row holds them dequantised, the NF4 row
# rounds them to 4 bits a second time, in another format.)
#
# * **weights in memory**, by dtype: NF4 stores each weight of the linear layers in 4 bits (packed two to a
#   byte, so they show as `uint8`, plus one scale per block of 64, itself quantised with double
#   quantization). bitsandbytes quantises only linear layers, and peft's `prepare_model_for_kbit_training`
#   casts every parameter it left alone to float32, the embedding matrix included: for a model with a large
#   vocabulary that matrix is a good part of what remains.
# * **seconds per step**: every forward and backward pass dequantises the 4-bit blocks it needs. On a GPU
#   fast kernels hide that; on a CPU it is extra work the float32 model does not do. The cell measures both
#   here; how the ratio varied between CPUs we measured (about even on one with AVX512-BF16, 2.1x slower on
#   an AVX2-only one) is in [docs/llm-track.md](../docs/llm-track.md).
# * **compute dtype**: the 4-bit blocks are unpacked to `bnb_4bit_compute_dtype` for each product. bf16
#   halves the memory traffic, but only CPUs with bf16 in hardware (AVX512 on x86; notebook 00's hardware
#   table says) compute it natively; elsewhere PyTorch emulates it, far slower than float32 (measured in
#   docs/llm-track.md), so there we unpack to float32.
# * **held-out NLL** of the freshly loaded model (adapters start at zero): what rounding the weights to
#   4 bits costs in quality before any training.
# * **peak RSS**: the most memory the process held during the steps (it includes everything this notebook
#   has loaded so far, so read the difference between the two rows).

# %%
QUANT_STEPS = estimates.QUANT_STEPS
quantization = None
if profile.device != "cpu":
    print(f"route '{route.name}': the run above already trained on 4-bit weights; nothing to compare here")
else:
    import dataclasses
    from collections import Counter

    from workshop_utils.answers import answer_nll

    # the same model through load_model's two CPU paths: float32, and bitsandbytes 4-bit NF4
    print(f"4-bit blocks are unpacked to {nf4_compute_dtype(profile)} for each product")
    candidates = {
        "float32 LoRA": load_model(dataclasses.replace(route, name="dense"), profile, MAX_LENGTH)[0],
        "4-bit NF4 (QLoRA)": load_model(dataclasses.replace(route, name="bnb"), profile, MAX_LENGTH)[0],
    }
    n_check = min(16, len(questions))
    quick_rows = train_conversations.select(range(min(len(train_conversations), QUANT_STEPS * profile.sft_batch_size)))
    estimates.announce(f"{QUANT_STEPS} training steps in float32 and in 4-bit",
                       estimates.quantization_check_seconds(profile))
    rows = {}
    for name, candidate in candidates.items():
        ensure_distinct_pad(tokenizer, candidate)
        weights = candidate.get_memory_footprint()
        by_dtype = Counter()  # bytes held per dtype (4-bit blocks are packed into uint8)
        for tensor in [*candidate.parameters(), *candidate.buffers()]:
            by_dtype[str(tensor.dtype).removeprefix("torch.")] += tensor.numel() * tensor.element_size()
        candidate = add_lora(candidate, route, profile, seed=SEED)
        nll = answer_nll(candidate, tokenizer, questions[:n_check], references[:n_check], system_prompt=SYSTEM_PROMPT, desc=name)
        quick_config = SFTConfig(
            output_dir=str(profile.outputs() / "sft-4bit-check"), max_steps=QUANT_STEPS,
            per_device_train_batch_size=profile.sft_batch_size, learning_rate=profile.sft_learning_rate,
            max_length=MAX_LENGTH, completion_only_loss=True, use_cpu=True, gradient_checkpointing=False,
            bf16=False,  # SFTConfig turns bf16 mixed precision on by default; both rows compute as loaded
            save_strategy="no", report_to="tensorboard", seed=SEED, disable_tqdm=True,
        )
        quick = SFTTrainer(model=candidate, args=quick_config, train_dataset=quick_rows, processing_class=tokenizer)
        with measure("cpu") as steps_cost:
            quick.train()
        rows[name] = {"weights (MB)": weights / 1e6,
                      "weights by dtype (MB)": ", ".join(f"{k} {v / 1e6:.0f}" for k, v in sorted(by_dtype.items())),
                      "seconds per step": steps_cost["seconds"] / QUANT_STEPS,
                      "peak RSS during the steps (GB)": steps_cost["peak_memory_bytes"] / 1e9,
                      f"held-out NLL ({n_check} answers)": nll}
        del quick, candidate
    quantization = pd.DataFrame(rows).T
    del candidates
    print(quantization.round(3).to_string())
    fp32_row, nf4_row = rows["float32 LoRA"], rows["4-bit NF4 (QLoRA)"]
    print(f"\n4-bit keeps the weights in {nf4_row['weights (MB)'] / fp32_row['weights (MB)']:.0%} of the memory, "
          f"at {nf4_row['seconds per step'] / fp32_row['seconds per step']:.1f}x the time per step.")
    results.record("03_qlora_llama3_sft", "quantization", {
        "weights_bytes": {k: int(v["weights (MB)"] * 1e6) for k, v in rows.items()},
        "seconds_per_step": {k: round(v["seconds per step"], 3) for k, v in rows.items()},
        "peak_memory_bytes": {k: int(v["peak RSS during the steps (GB)"] * 1e9) for k, v in rows.items()},
        "nll_before_training": {k: v[f"held-out NLL ({n_check} answers)"] for k, v in rows.items()},
    })
    assert nf4_row["weights (MB)"] <= fp32_row["weights (MB)"] / 3 + 1, "4-bit weights should take under a third of float32's"

# %% [markdown]
# On a CPU, 4-bit is a memory tool, not a speed tool, and rounding the weights to 4 bits raises the
# held-out NLL before training starts: a 135M model fits in a laptop's memory in float32, so the main run
# above stays in float32. Llama 3 8B is the other way round: 16 GB of bf16
# weights do not fit a 16 GB T4, 5.5 GB of NF4 weights do, and that is why the GPU route is QLoRA.
