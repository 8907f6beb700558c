"""How fast is this machine at the workshop's kind of work? A calibration probe of a second or two.

The rates in ``estimates`` were measured on one reference machine. This probe times, here, the operations
that work is made of, with the threads torch will use (which follow ``taskset``); ``estimates`` then scales
each kind of work by reference probe / this machine's probe:

    train384 / train576  forward + backward of one transformer block at MiniLM's shapes (hidden 384, MLP 1536,
                         16 x 64 tokens) and SmolLM2's (hidden 576, MLP 1536, 4 x 128 tokens), in GFLOP/s
    matmul               float32 matmuls at those shapes (batched forward passes: evaluation, answer NLL)
    decode               4 rows against SmolLM2's 576 x 49,152 output layer (greedy generation: memory-bound)
    copy, python         a 64 MB tensor copy and a pure-Python loop (imports, loading, bookkeeping)

Each figure is the best of repeated timings (the machine's speed when nothing interrupts it). The result is
cached in ``.cache/estimates-probe.json`` under a fingerprint of the hardware and of torch; a changed
fingerprint (another CPU, ``taskset``, ``OMP_NUM_THREADS``, a torch upgrade) measures again. A probe taken
while the machine was busy is retaken next time (up to ``MAX_PROBES``), keeping each figure's best.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

PROBE_VERSION = 1
CACHE_NAME = "estimates-probe.json"
MAX_PROBES = 3  # probes of one fingerprint while the machine stays busy
RETRY_AFTER_S = 600  # after a probe that ran past its limit, the next tries wait this long (fallback meanwhile)
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
         "asimd", "sve", "bf16")
FIGURES = ("train384_gflops", "train576_gflops", "matmul_gflops", "decode_gflops", "copy_gbs", "python_mops")
DISABLE_ENV = "WORKSHOP_ESTIMATES_PROBE"  # =0 turns the probe off (core-count scaling, as before)


# --------------------------------------------------------------------------- fingerprint
def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if not model and key in ("model name", "hardware", "cpu model"):
            model = value.strip()
        elif not flags and key in ("flags", "features"):
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def fingerprint() -> dict:
    """What decides this machine's speed at the workshop's work (never anything personal)."""
    import torch

    model, flags = _cpuinfo()
    return {
        "cpu": model,
        "flags": sorted(flags.intersection(FLAGS)),
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "probe": PROBE_VERSION,
    }


def fingerprint_key(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the probe
class ProbeTooSlow(RuntimeError):
    """The probe ran past its time limit: the machine is busy (or very slow); nothing is cached."""


_LIMIT = [math.inf, 0.0]  # the running probe's deadline (perf_counter) and its limit in seconds


def _best(fn, budget_s: float, min_runs: int = 2) -> float:
    """Shortest time of ``fn()`` over ``budget_s`` seconds of repeats, after one warm-up call."""
    fn()
    times: list[float] = []
    stop = time.perf_counter() + budget_s
    while len(times) < min_runs or (time.perf_counter() < stop and len(times) < 500):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if time.perf_counter() > _LIMIT[0]:
            raise ProbeTooSlow(f"the probe ran past {_LIMIT[1]:g} s (machine busy?)")
    return min(times)


def _block_gflops(torch, shape: tuple[int, int, int, int, int], frozen: bool, budget_s: float) -> float:
    """Forward + backward of a pre-norm transformer block (attention + MLP) of ``shape`` = (hidden, MLP, heads,
    batch, sequence). ``frozen``: LoRA's case, no weight gradients (4 x tokens x weights flops, else 6 x)."""
    hidden, inner, heads, batch, seq = shape
    nn = torch.nn
    norm1, norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
    qkv, out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
    up, down = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
    params = [p for m in (norm1, norm2, qkv, out, up, down) for p in m.parameters()]
    for p in params:
        p.requires_grad_(not frozen)
    x = torch.randn(batch, seq, hidden, requires_grad=frozen)

    def step():
        q, k, v = qkv(norm1(x)).view(batch, seq, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
        attn = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = x + out(attn.transpose(1, 2).reshape(batch, seq, hidden))
        h = h + down(nn.functional.silu(up(norm2(h))))
        h.square().mean().backward()
        for p in (*params, x):
            p.grad = None

    weights = hidden * 4 * hidden + 2 * hidden * inner
    flops = (4 if frozen else 6) * batch * seq * weights + 6 * batch * seq * seq * hidden  # linear layers + attention
    return flops / _best(step, budget_s) / 1e9


def _matmul_gflops(torch, shapes, budget_s: float) -> float:
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)

    def run():
        for a, b in pairs:
            torch.mm(a, b)

    return flops / _best(run, budget_s) / 1e9


def _copy_gbs(torch, budget_s: float) -> float:
    src = torch.empty(16 * 2**20)  # 64 MB of float32
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best(lambda: dst.copy_(src), budget_s) / 1e9  # read + write


def _python_mops(budget_s: float) -> float:
    def loop():
        table = {}
        for i in range(20_000):
            table[str(i)] = i * 2
        return sum(table.values())

    return 20_000 / _best(loop, budget_s) / 1e6


def run_probe(budget_s: float = 0.2, limit_s: float = 6.0) -> dict[str, float]:
    """This machine's figures (``FIGURES``); about ``6 x budget_s`` seconds plus warm-ups, and
    ``ProbeTooSlow`` past ``limit_s`` (a machine so busy that its figures would mislead).

    torch's global random state is saved and restored around it, so a notebook's seeded numbers do not
    depend on whether the probe ran in its first cell."""
    import torch

    _LIMIT[:] = [time.perf_counter() + limit_s, limit_s]
    try:
        figures = _run_probe(torch, budget_s)
    finally:
        _LIMIT[:] = [math.inf, 0.0]
    bad = [k for k, v in figures.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        raise RuntimeError(f"probe figures not positive: {', '.join(bad)}")
    return figures


def _run_probe(torch, budget_s: float) -> dict[str, float]:
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False):
        torch.manual_seed(0)
        with torch.enable_grad():
            train384 = _block_gflops(torch, (384, 1536, 12, 4, 64), False, budget_s)  # MiniLM, full fine-tuning
            train576 = _block_gflops(torch, (576, 1536, 9, 2, 128), True, budget_s)  # SmolLM2 under LoRA
        with torch.no_grad():
            matmul = _matmul_gflops(torch, [(256, 576, 1536), (256, 1536, 576), (256, 384, 1536), (256, 1536, 384)],
                                    budget_s)
            decode = _matmul_gflops(torch, [(4, 576, 49152)], budget_s)
            copy = _copy_gbs(torch, budget_s)
    return {"train384_gflops": train384, "train576_gflops": train576, "matmul_gflops": matmul,
            "decode_gflops": decode, "copy_gbs": copy, "python_mops": _python_mops(budget_s)}


# --------------------------------------------------------------------------- cache
def cache_path() -> Path:
    from .paths import cache_dir

    return cache_dir() / CACHE_NAME


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("machines", {}) if isinstance(data, dict) else {}


def _write_cache(path: Path, machines: dict) -> None:
    from .paths import write_json_atomic

    try:  # two processes probing at once: the last whole file wins
        write_json_atomic(path, {"version": PROBE_VERSION, "machines": machines}, indent=1, sort_keys=True)
    except OSError:
        pass  # a read-only checkout: estimates still work, the probe runs again next time


def machine_busy() -> tuple[bool, float]:
    """(busy, 1-minute load average): busy when other work holds over half of the machine's CPUs."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return False, 0.0
    return load > 0.5 * (os.cpu_count() or 1), load


def measured_figures(refresh: bool = False) -> tuple[dict[str, float], str]:
    """This machine's figures and where they come from ("cached ...", "measured now ..."); raises when the
    probe cannot run."""
    fp = fingerprint()
    key, path = fingerprint_key(fp), cache_path()
    machines = _read_cache(path)
    entry = machines.get(key)
    valid = isinstance(entry, dict) and set(FIGURES) <= set(entry.get("figures", {}))
    if valid and not refresh and not (entry.get("busy") and entry.get("runs", 1) < MAX_PROBES):
        return entry["figures"], f"cached {entry.get('measured', '')}".strip()
    if not valid and time.time() - float(entry.get("too_slow_at", 0) if isinstance(entry, dict) else 0) < RETRY_AFTER_S:
        raise ProbeTooSlow(f"the last probe here ran too long, under {RETRY_AFTER_S // 60} min ago (machine busy?)")
    busy, load = machine_busy()
    start = time.perf_counter()
    try:
        figures = run_probe()
    except ProbeTooSlow:
        if valid:  # a retake of a busy probe: keep what it found
            return entry["figures"], f"cached {entry.get('measured', '')} (retaken too slowly now)"
        machines[key] = {"fingerprint": fp, "too_slow_at": time.time()}
        _write_cache(path, machines)
        raise
    took = time.perf_counter() - start
    runs = 1
    if valid and not refresh:  # a busy earlier probe: keep each figure's best
        figures = {k: max(figures[k], entry["figures"][k]) for k in FIGURES}
        runs = entry.get("runs", 1) + 1
    machines[key] = {"fingerprint": fp, "figures": figures, "measured": time.strftime("%Y-%m-%d"),
                     "load_before": round(load, 2), "busy": busy, "runs": runs, "seconds": round(took, 2)}
    _write_cache(path, machines)
    return figures, f"measured now in {took:.1f} s" + (f" (machine busy, load {load:.1f})" if busy else "")
