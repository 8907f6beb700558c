"""GPU rehearsal: every GPU-only line of the workshop, in one command, with a short report.

    python3 scripts/gpu_rehearsal.py --pass 1 --report DIR   # build, bitsandbytes route, merge
    python3 scripts/gpu_rehearsal.py --pass 2 --report DIR   # build, Unsloth route, DPO on its adapter
    .venv/bin/python scripts/gpu_rehearsal.py --download-wheels 1   # here: the wheels pass 1 needs, in .whl/pass1/

Each step runs in a Python process of its own (importing unsloth patches transformers process-wide; a CUDA
error cannot take the other steps down), through the workshop's own code:

* ``build``: a random-initialised model with Llama 3 8B's shapes (``--layers`` cuts depth) and a Llama 3-like
  tokenizer of the same 128,256 entries (gpu_sft_benchmark.build_llama3_tokenizer), bf16 safetensors in ``--work``;
* ``unsloth``, ``bnb`` (notebook 03): the route's 4-bit load + LoRA, ``SFTTrainer`` steps (Unsloth: then
  ``FastLanguageModel.for_inference``), the answers' NLL, greedy answers; the adapter saved;
* ``merge`` (notebook 04): ``recipes.inference_pipeline.merge_adapter``, the merge reloaded in 4-bit, ``merge_check``;
* ``dpo`` (notebook 05): ``load_sft_model`` (adapter trainable), ``DPOTrainer`` on a few pairs; TRL's copy "ref"
  must exist, be frozen and stay unchanged while "default" moves.

Random weights answer gibberish: the report says whether each line runs and what it costs. No accelerate FSDP
step: FSDP over 4-bit weights needs ``bnb_4bit_quant_storage`` and a config the workshop does not teach.
Pass 1 needs the wheels of bitsandbytes, trl, datasets, dill, multiprocess, fsspec (43.0 MiB); pass 2 those and
unsloth (without its unused ``studio/`` web app), unsloth_zoo, cut_cross_entropy (47.9 MiB): each fits one
64 MiB call. Report in ``--report DIR``: gpu_rehearsal.json, gpu_rehearsal.md (a row per step: status, one-line
error, seconds, peak GPU memory, tokens/s), each step's log. docs/benchmarks.md, "GPU rehearsal", has the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "scripts")]
from gpu_sft_benchmark import build_random_llama, llama3_shape  # noqa: E402  (the model both GPU scripts use)

SEED = 42
PASSES = {"1": ("build", "bnb", "merge"), "2": ("build", "unsloth", "dpo"), "all": ("build", "bnb", "merge", "unsloth", "dpo")}
TITLES = {"build": "random Llama 3 8B-shaped model + tokenizer", "unsloth": "notebook 03, Unsloth route",
          "bnb": "notebook 03, bitsandbytes + peft route", "merge": "notebook 04, merge_adapter + 4-bit reload",
          "dpo": "notebook 05, DPO on the SFT adapter (ref copy)"}
# (name, version) per pass; sizes measured with --download-wheels on 2026-12-05 (unsloth: without studio/)
WHEELS_1 = [("bitsandbytes", "0.50.2"), ("trl", "1.15.0"), ("datasets", "4.8.5"), ("dill", "0.4.1"),
            ("multiprocess", "0.70.19"), ("fsspec", "2026.2.0")]
WHEELS = {"1": WHEELS_1, "2": WHEELS_1 + [("unsloth", "2026.10.9"), ("unsloth_zoo", "2026.10.9"),
                                        ("cut_cross_entropy", "25.1.1")]}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")
FORWARDED = ("work", "layers", "hidden", "steps", "dpo_steps", "new_tokens")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pass", dest="which", choices=tuple(PASSES), default="all", help="which steps (default all)")
    p.add_argument("--layers", type=int, default=32, help="decoder layers (Llama 3 8B: 32); fewer for a quick pass")
    p.add_argument("--hidden", type=int, default=None, help="hidden size, to scale the model down (default 4096)")
    p.add_argument("--steps", type=int, default=4, help="SFT steps per route")
    p.add_argument("--dpo-steps", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32, help="new tokens per greedy answer")
    p.add_argument("--budget-s", type=float, default=450.0, help="after this many seconds, steps left are not run")
    p.add_argument("--report", default=str(ROOT / "outputs" / "gpu-rehearsal"), help="where the report goes")
    p.add_argument("--work", default=str(ROOT / ".cache" / "gpu-rehearsal"), help="models and adapters (~32 GB)")
    p.add_argument("--download-wheels", choices=("1", "2"), help="download the wheels a pass needs into .whl/passN")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the steps on the CPU with a tiny model (plumbing only; the unsloth step fails by design)")
    p.add_argument("--child", choices=tuple(TITLES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, least in (("layers", 1), ("steps", 2), ("dpo_steps", 2), ("new_tokens", 1)):
        if getattr(args, name) < least:  # step 1 of the recipes' schedules is warm-up at learning rate 0
            p.error(f"--{name.replace('_', '-')} must be at least {least}")
    if args.hidden is not None and args.hidden != 64 and (args.hidden < 128 or args.hidden % 128):
        p.error("--hidden must be 64 or a multiple of 128 (heads of 128 dimensions, as Llama 3's)")
    if args.cpu_dry_run:
        args.hidden, args.layers = args.hidden or 64, min(args.layers, 2)
    args.work, args.report = Path(args.work).resolve(), Path(args.report).resolve()
    return args


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300].rstrip(": ")


def no_cuda_reason() -> str | None:
    """Why this machine cannot run the rehearsal, or None; torch is imported only where a driver exists."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        return "no NVIDIA driver here (no /dev/nvidiactl, no nvidia-smi)"
    import torch

    return None if torch.cuda.is_available() else "torch.cuda.is_available() is False"


# --------------------------------------------------------------------------- the steps (run in a child process)
def rehearsal_profile(args):
    """The gpu profile, pointed at the random model, with a few rows and steps."""
    import dataclasses

    from workshop_utils.profiles import make_profile

    profile = make_profile("gpu", "GPU rehearsal on a random Llama 3 8B-shaped model", cuda=True, hub=False)
    model = str(args.work / "model")
    changes = dict(llm_model=model, llm_model_bnb=model, llm_train_rows=64, llm_eval_rows=8, llm_generate_rows=4,
                   sft_max_steps=args.steps, dpo_max_steps=args.dpo_steps, max_new_tokens=args.new_tokens)
    if args.cpu_dry_run:  # smaller batches too: a CPU computes all 128,256 logits
        changes.update(device="cpu", precision="fp32", sft_grad_accum=1, sft_max_length=128, dpo_batch_size=2)
    return dataclasses.replace(profile, **changes)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _rows(profile):
    from workshop_utils.data import load_instruction_task

    return load_instruction_task(profile)


def _answer(model, tokenizer, profile, data) -> dict:
    """Notebook 03's scoring lines: NLL of reference answers, then greedy answers; their throughput."""
    from workshop_utils.answers import answer_nll, answer_token_ids, generate_answers

    questions, references = list(data["test"]["instruction"]), list(data["test"]["response"])
    tokens = sum(len(p) + len(a) for p, a in (answer_token_ids(tokenizer, q, r) for q, r in zip(questions, references)))
    _sync()
    start = time.perf_counter()
    nll = answer_nll(model, tokenizer, questions, references, desc="NLL")
    _sync()
    nll_s, start = time.perf_counter() - start, time.perf_counter()
    answers = generate_answers(model, tokenizer, questions[:profile.llm_generate_rows],
                               max_new_tokens=profile.max_new_tokens, desc="answers")
    _sync()
    gen_s, new = time.perf_counter() - start, sum(a.new_tokens for a in answers)
    return {"nll": round(nll, 3), "nll_tokens_per_second": round(tokens / nll_s, 1), "generated_tokens": new,
            "generate_seconds": round(gen_s, 2), "generate_tokens_per_second": round(new / gen_s, 1),
            "generate_tokens_per_second_per_prompt": round(new / gen_s / len(answers), 1),
            "first_answer": answers[0].shown()[:80]}


def _sft(profile, route, args) -> dict:
    """Notebook 03 on one route: load + pad fix + LoRA, SFTTrainer steps, scoring, the adapter saved."""
    from workshop_utils.metrics import measure
    from workshop_utils.commands.sft import load_for_route

    start = time.perf_counter()
    model, tokenizer = load_for_route(route, profile, max_length=profile.sft_max_length, seed=SEED)
    load_s = time.perf_counter() - start
    from trl import SFTTrainer

    from workshop_utils.chat import to_prompt_completion
    from workshop_utils.recipes.qlora_llama3_sft import sft_training_config
    from workshop_utils.routes import use_torch_loss_on_cpu

    use_torch_loss_on_cpu()
    if route.name == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_training(model)
    data = _rows(profile)
    config = sft_training_config(profile, route, args.work / f"{route.name}-checkpoints")  # seed 42, as the notebook
    trainer = SFTTrainer(model=model, args=config, train_dataset=to_prompt_completion(data["train"]),
                         processing_class=tokenizer)
    with measure(profile.device) as cost:
        trainer.train()
    tokens = trainer.state.num_input_tokens_seen
    if route.name == "unsloth":
        FastLanguageModel.for_inference(model)
    scores = _answer(trainer.model, tokenizer, profile, data)
    adapter = args.work / f"{route.name}-adapter"
    trainer.model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    return {"route": route.name, "load_seconds": round(load_s, 1), "train_seconds": round(cost["seconds"], 2),
            "train_tokens": tokens, "train_tokens_per_second": round(tokens / cost["seconds"], 1),
            "train_peak_memory_bytes": int(cost["peak_memory_bytes"]), "steps": trainer.state.global_step, **scores}


def step_build(args) -> dict:
    import torch

    info = build_random_llama(args.work / "model", shape=llama3_shape(args.layers, args.hidden),
                              device="cpu" if args.cpu_dry_run else "cuda")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (--cpu-dry-run)"
    return {**info, "gpu": gpu, "torch": torch.__version__}


def step_unsloth(args) -> dict:
    from workshop_utils.routes import choose_route

    profile = rehearsal_profile(args)
    route = choose_route(profile)  # on a GPU with Unsloth this imports unsloth before transformers, as notebook 03
    if route.name != "unsloth":
        why = ""
        if "failed to import" in route.reason:  # choose_route names the exception's class only: show its message
            try:
                import unsloth  # noqa: F401
            except Exception as exc:
                why = f" [{one_line(exc)}]"
        raise RuntimeError(f"notebook 03 would take route {route.name!r} here, because {route.reason}{why}")
    return _sft(profile, route, args)


def step_bnb(args) -> dict:
    from workshop_utils.routes import choose_route

    profile = rehearsal_profile(args)
    return _sft(profile, choose_route(profile, use_unsloth=False), args)


def _adapter(args, order: tuple[str, ...]) -> Path:
    """The first SFT adapter of ``order`` this work folder holds (the gpu profile's notebook 05 gets Unsloth's)."""
    for name in order:
        if (args.work / f"{name}-adapter" / "adapter_config.json").is_file():
            return args.work / f"{name}-adapter"
    raise RuntimeError(f"needs the adapter that step {' or '.join(map(repr, order))} saves in {args.work}; "
                       "run that step first (same --work)")


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def step_merge(args) -> dict:
    """Notebook 04: log-probabilities of base + adapter, merge_adapter, the merge reloaded in 4-bit, compared."""
    adapter = _adapter(args, ("bnb", "unsloth"))
    try:
        from workshop_utils.recipes.inference_pipeline import (merge_adapter, merge_check, merge_tolerance,
                                                               reference_logprobs)
    except ImportError as exc:
        raise RuntimeError("workshop_utils.recipes.inference_pipeline.merge_adapter is missing: it is notebook 04's "
                           f"export cell (write it there, run nbbuild) [{one_line(exc)}]") from None
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from workshop_utils.answers import saved_weight_files
    from workshop_utils.recipes.qlora_llama3_sft import load_model
    from workshop_utils.routes import SFTRoute

    profile, merged = rehearsal_profile(args), args.work / "merged"
    data = _rows(profile)
    questions, references = list(data["test"]["instruction"][:4]), list(data["test"]["response"][:4])
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    base, _ = load_model(SFTRoute("bnb", profile.llm_model_bnb, "the 4-bit base"), profile, profile.sft_max_length)
    chat_model = PeftModel.from_pretrained(base, str(adapter))
    adapter_lp = reference_logprobs(chat_model, tokenizer, questions, references)
    with chat_model.disable_adapter():
        base_lp = reference_logprobs(chat_model, tokenizer, questions, references)
    del chat_model, base
    _free()  # one model on the GPU at a time, as notebook 04
    merge_dtype = torch.bfloat16 if profile.device == "cuda" else torch.float32
    shutil.rmtree(merged, ignore_errors=True)
    start = time.perf_counter()
    merge_adapter(adapter, merged, base_model=profile.llm_model_bnb, dtype=merge_dtype)
    tokenizer.save_pretrained(str(merged))
    merge_s, start = time.perf_counter() - start, time.perf_counter()
    weights = saved_weight_files(merged)
    if not weights or any(not w.endswith(".safetensors") for w in weights):
        raise RuntimeError(f"the merged folder holds {weights or 'no weights'}: expected safetensors only")
    model, _ = load_model(SFTRoute("bnb", str(merged), "the merged model in 4-bit"), profile, profile.sft_max_length)
    load_s = time.perf_counter() - start
    check = merge_check(adapter_lp, reference_logprobs(model, tokenizer, questions, references), base_lp,
                        **merge_tolerance(merge_dtype, requantised=True))
    return {"adapter": adapter.name, "merge_seconds": round(merge_s, 1), "reload_4bit_seconds": round(load_s, 1),
            "weight_files": len(weights), "merge_check": {k: check[k] for k in ("merged_vs_adapter", "base_vs_adapter", "ok")},
            **_answer(model, tokenizer, profile, data)}


def _adapter_sums(model, name: str) -> dict[str, tuple[float, bool]]:
    return {n: (float(p.detach().float().sum()), p.requires_grad) for n, p in model.named_parameters() if f".{name}." in n}


def step_dpo(args) -> dict:
    adapter = _adapter(args, ("unsloth", "bnb"))
    from datasets import Dataset
    from trl import DPOTrainer

    from workshop_utils.dpo import PAIR_KEYS
    from workshop_utils.metrics import measure
    from workshop_utils.recipes import preference_dpo as recipe
    from workshop_utils.routes import use_torch_loss_on_cpu

    use_torch_loss_on_cpu()
    profile = rehearsal_profile(args)
    model, tokenizer = recipe.load_sft_model(profile, adapter)
    rows = _rows(profile)["train"]
    n = profile.dpo_batch_size * args.dpo_steps  # chosen: the reference answer; rejected: another question's
    pairs = [recipe.make_pair(rows[i]["instruction"], rows[i]["response"], rows[i + 1]["response"], "train") for i in range(n)]
    trainer = DPOTrainer(model=model, args=recipe.dpo_config(profile, args.work / "dpo-checkpoints"), processing_class=tokenizer,
                         train_dataset=Dataset.from_list([{k: p[k] for k in PAIR_KEYS} for p in pairs]))
    ref, default = _adapter_sums(trainer.model, "ref"), _adapter_sums(trainer.model, "default")
    if not ref or any(trainable for _, trainable in ref.values()):
        raise RuntimeError(f"TRL's 'ref' adapter is {'missing' if not ref else 'trainable'}: the reference would drift")
    with measure(profile.device) as cost:
        trainer.train()
    if _adapter_sums(trainer.model, "ref") != ref:
        raise RuntimeError("the frozen 'ref' adapter changed during DPO training")
    moved = sum(v[0] != default[k][0] for k, v in _adapter_sums(trainer.model, "default").items())
    if not moved:
        raise RuntimeError("DPO training did not change the 'default' adapter")
    recipe.save_adapter(trainer.model, tokenizer, args.work / "dpo-adapter")
    return {"pairs": n, "steps": trainer.state.global_step, "train_seconds": round(cost["seconds"], 2),
            "train_peak_memory_bytes": int(cost["peak_memory_bytes"]), "ref_tensors_frozen": len(ref),
            "default_tensors_moved": moved, "pairs_per_second": round(n / cost["seconds"], 2)}


STEPS = {"build": step_build, "unsloth": step_unsloth, "bnb": step_bnb, "merge": step_merge, "dpo": step_dpo}


# --------------------------------------------------------------------------- running the steps, the report
def run_step(name: str, args) -> dict:
    """One step in this process: its figures, or its one-line error; GPU memory freed afterwards either way."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = {"step": name, "title": TITLES.get(name, name), "status": "passed", "error": None, "metrics": {}}
    start = time.perf_counter()
    try:
        result["metrics"] = STEPS[name](args) or {}
    except Exception as exc:  # the report records it and the next step runs
        result.update(status="failed", error=one_line(exc))
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated()) if cuda else None
    _free()
    return result


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def run_child(name: str, args, timeout: float) -> dict:
    """One step in a fresh Python process, its output in ``REPORT/<step>.log``, stopped at ``timeout``."""
    result_file, log = args.work / "results" / f"{name}.json", args.report / f"{name}.log"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    for key in FORWARDED:
        if getattr(args, key) is not None:
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--cpu-dry-run"] if args.cpu_dry_run else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        try:  # cwd: Unsloth writes its compiled cache into the working directory
            done = subprocess.run(cmd, cwd=args.work, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return failed(name, f"stopped after {timeout:.0f} s: the time budget (--budget-s {args.budget_s:g}) ran out",
                          time.perf_counter() - start)
    if result_file.is_file():
        return json.loads(result_file.read_text())
    return failed(name, f"its process exited with code {done.returncode} and no result; {log.name} ends: "
                        f"{_last_line(log)}", time.perf_counter() - start)


def failed(name: str, error: str, seconds: float, status: str = "failed") -> dict:
    return {"step": name, "title": TITLES.get(name, name), "status": status, "error": error, "metrics": {},
            "seconds": round(seconds, 1), "peak_gpu_memory_bytes": None}


def run_all(names, args, *, isolate: bool = True, min_step_s: float = 10.0) -> list[dict]:
    """Each step in turn within ``args.budget_s``; the steps the budget leaves no time for are "not run (time)"."""
    start, results = time.perf_counter(), []
    for name in names:
        left = args.budget_s - (time.perf_counter() - start)
        if left < min_step_s:
            results.append(failed(name, f"the time budget (--budget-s {args.budget_s:g}) was spent", 0.0,
                                  status="not run (time)"))
        else:
            print(f"gpu_rehearsal: {name}: {TITLES.get(name, name)} ...", flush=True)
            results.append(run_child(name, args, left) if isolate else run_step(name, args))
        r = results[-1]
        print(f"gpu_rehearsal: {name}: {r['status']} in {r['seconds']} s" + (f": {r['error']}" if r["error"] else ""),
              flush=True)
    return results


def _cell(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{value:,.1f}"


def write_report(results: list[dict], args, folder: Path) -> tuple[Path, Path]:
    """gpu_rehearsal.json (everything) and gpu_rehearsal.md (one row per step) in ``folder``."""
    from workshop_utils.tables import markdown_table

    folder.mkdir(parents=True, exist_ok=True)
    build = next((r["metrics"] for r in results if r["step"] == "build"), {})
    packages = {}
    for pkg in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "bitsandbytes", "unsloth", "unsloth_zoo"):
        try:
            packages[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            packages[pkg] = None
    data = {"script": "scripts/gpu_rehearsal.py", "pass": args.which, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "gpu": build.get("gpu"), "model_shape": llama3_shape(args.layers, args.hidden), "budget_s": args.budget_s,
            "sft_steps": args.steps, "dpo_steps": args.dpo_steps, "new_tokens": args.new_tokens,
            "packages": packages, "steps": results}
    json_file, md_file = folder / "gpu_rehearsal.json", folder / "gpu_rehearsal.md"
    json_file.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    shape = data["model_shape"]
    lines = [f"GPU rehearsal, pass {args.which}, {data['when']}: {data['gpu'] or 'GPU unknown'}; random model, "
             f"{shape['num_hidden_layers']} layers x hidden {shape['hidden_size']}, vocabulary {shape['vocab_size']:,}; "
             f"{args.steps} SFT steps, {args.dpo_steps} DPO steps, {args.new_tokens} new tokens per answer", ""]
    rows = []
    for r in results:
        peak = r["peak_gpu_memory_bytes"]
        rows.append((r["step"], r["title"], r["status"], r["seconds"], "-" if peak is None else f"{peak / 2**30:.2f} GiB",
                     _cell(r["metrics"], "train_tokens_per_second"), _cell(r["metrics"], "generate_tokens_per_second"),
                     (r["error"] or "").replace("|", "/")))
    lines.append(markdown_table(("step", "what", "status", "seconds", "peak GPU memory", "train tokens/s",
                                 "generate tokens/s", "error"), rows))
    md_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_file, md_file


# --------------------------------------------------------------------------- wheels for the GPU machine
def slim_wheel(path: Path, drop: str) -> None:
    """Rewrite a wheel without the files under top-level folder ``drop`` (and their RECORD lines)."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename.startswith(drop + "/"):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(True) if not line.startswith(drop.encode() + b"/"))
            dst.writestr(item, data)
    tmp.replace(path)


def download_wheels(which: str) -> int:
    """The wheels pass ``which`` needs, for the GPU machine's Python 3.12, into .whl/pass<which>/."""
    folder = ROOT / ".whl" / f"pass{which}"
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [x for plat in PLATFORMS for x in ("--platform", plat)]
    for name, version in WHEELS[which]:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *platforms, "-d", str(folder), "-q", f"{name}=={version}"]
        if subprocess.run(cmd).returncode != 0:
            print(f"gpu_rehearsal: could not download {name}=={version}; check that PyPI is reachable", file=sys.stderr)
            return 1
    for wheel in folder.glob("unsloth-*.whl"):
        slim_wheel(wheel, "studio")  # Unsloth Studio's web app: 26 MB that nothing here imports
    total = 0
    for wheel in sorted(folder.glob("*.whl")):
        total += wheel.stat().st_size
        print(f"{wheel.stat().st_size:>12,}  {wheel.name}")
    print(f"{total:>12,}  in all ({total / 2**20:.1f} MiB) in {folder.relative_to(ROOT)}; carry it to the GPU machine")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels)
    if args.child:
        result = run_step(args.child, args)
        out = args.work / "results" / f"{args.child}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result), encoding="utf-8")
        return 0
    reason = None if args.cpu_dry_run else no_cuda_reason()
    if reason:
        print(f"gpu_rehearsal: no CUDA GPU here ({reason}); run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    args.report.mkdir(parents=True, exist_ok=True)
    results = run_all(PASSES[args.which], args)
    json_file, md_file = write_report(results, args, args.report)
    print(md_file.read_text(encoding="utf-8"))
    print(f"gpu_rehearsal: report in {json_file} and {md_file.name}")
    return 0 if all(r["status"] == "passed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
