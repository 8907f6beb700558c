"""What is in front of the attendee: hardware, versions, disk, hub login (never the token itself)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

# On Colab the notebooks' first cell installs requirements.txt but these (Colab's CUDA build of torch, the
# pandas that Colab's kernel package pins) and nothing of requirements-dev.txt: there Colab's own copies count.
COLAB_KEEPS = ("torch", "pandas")
REQUIREMENT_FILES = ("requirements.txt", "requirements-dev.txt")
KEY_PACKAGES = (
    "torch", "transformers", "datasets", "accelerate", "peft", "trl", "bitsandbytes", "unsloth",
    "unsloth_zoo", "evaluate", "tokenizers", "huggingface_hub", "jupyterlab", "ipywidgets", "nbval",
)


def pinned_versions(requirements: Path | None = None) -> dict[str, str]:
    """``{name: version}`` from one requirements file, or from requirements.txt and requirements-dev.txt (names normalised)."""
    from .paths import repo_root

    pins = {}
    for path in [requirements] if requirements else [repo_root() / name for name in REQUIREMENT_FILES]:
        if path.exists():
            for line in path.read_text().splitlines():
                match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
                if match:
                    pins[_norm(match.group(1))] = match.group(2)
    return pins


def colab_own() -> set[str]:
    """The packages whose version on Colab is Colab's, not the pin (normalised names): see COLAB_KEEPS."""
    from .paths import repo_root

    return {_norm(name) for name in COLAB_KEEPS} | set(pinned_versions(repo_root() / REQUIREMENT_FILES[1]))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def versions() -> list[tuple[str, str, str, str]]:
    """(package, installed, pinned, status) for the packages that matter."""
    pins = pinned_versions()
    colabs = colab_own() if "google.colab" in sys.modules else set()
    rows = []
    for name in KEY_PACKAGES:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        pinned = pins.get(_norm(name), "-")
        base = installed.split("+")[0]
        status = "ok" if pinned in ("-", base) else ("MISSING" if installed == "missing" else "DIFFERS from pin")
        if _norm(name) in colabs and installed != "missing":  # the notebooks' first cell leaves it to Colab
            status = "ok (Colab's own)"
        elif _norm(name) in colabs and name not in COLAB_KEEPS:  # JupyterLab, nbval: Colab has its own front end
            status = "ok (not used on Colab)"
        rows.append((name, installed, pinned, status))
    return rows


def hardware() -> dict[str, str]:
    import torch

    info = {
        "python": f"{platform.python_version()} in {environment()}",
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
    }
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory"] = f"{pages / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        info["memory"] = "unknown"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability {props.major}.{props.minor}"
        info["bf16 supported"] = str(torch.cuda.is_bf16_supported())
    else:
        info["gpu"] = "none (CPU only)"
        info["bf16 on this CPU"] = "native" if cpu_bf16_native() else "emulated (slow): CPU work stays in float32"
    return info


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512 on x86, the BF16 extension on Arm).

    Without it PyTorch emulates bf16, and a bf16 matrix product takes many times as long as a float32 one
    (66x for 1024 x 1024 on an AVX2-only AMD EPYC, 2026-12-02): on such CPUs the workshop computes in float32.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def environment() -> str:
    """The Python environment this kernel runs in: ``.venv`` when it is the project's own."""
    import sys

    from .paths import repo_root

    prefix = Path(os.path.abspath(sys.prefix))  # not resolved: a venv's python is a symlink out of the repo
    try:
        return str(prefix.relative_to(repo_root()))
    except ValueError:
        return str(prefix)


def disk(path: Path | None = None) -> dict[str, str]:
    from .paths import repo_root

    usage = shutil.disk_usage(path or repo_root())
    return {"disk free": f"{usage.free / 2**30:.1f} GiB of {usage.total / 2**30:.0f} GiB"}


def hub_login_hint() -> str:
    """Whether a hub token is configured, and where from. The token itself is never read out."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "a hub token is set in the environment (HF_TOKEN); it is used, never shown"
    try:
        from huggingface_hub import constants

        token_file = Path(constants.HF_TOKEN_PATH)
        if token_file.is_file() and token_file.stat().st_size > 0:
            return "a hub token is stored by `hf auth login`; it is used, never shown"
    except Exception:
        pass
    return ("no hub token: public models and data work without one; for gated models (e.g. meta-llama) "
            "run `hf auth login` in a terminal, not in a notebook cell, so the token never lands in a notebook")


def print_table(rows, headers=None) -> None:
    rows = [tuple(str(c) for c in r) for r in rows]
    if headers:
        rows = [tuple(headers), *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if headers and n == 0:
            print("  ".join("-" * w for w in widths))
