"""Make the pinned environment usable on this machine, then prove it.

``python -m workshop_utils.tooling.setup_check --fix`` is the last step of ``make setup``. Unsloth depends on
torchvision, and the torchvision wheel on PyPI is a CUDA build: on a machine without CUDA it breaks
``import unsloth`` and even ``from transformers import Trainer`` (transformers imports torchvision
when it is present). Nothing in the workshop uses torchvision, so on such a machine it is removed.
Afterwards both imports are checked in fresh interpreters.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

CHECKS = {
    "transformers Trainer": "from transformers import Trainer, TrainingArguments",
    "peft": "from peft import LoraConfig, get_peft_model",
    "trl SFTTrainer": "from trl import SFTConfig, SFTTrainer",
    "unsloth": "import unsloth; from unsloth import FastLanguageModel",
}


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1]


def _runs(code: str) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.returncode == 0, _last_line(proc.stderr)


def cuda_available() -> bool:
    ok, _ = _runs("import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)")
    return ok


def fix_torchvision() -> str:
    if importlib.util.find_spec("torchvision") is None:
        return "torchvision: not installed (nothing to fix)"
    if cuda_available():
        return "torchvision: kept (CUDA present)"
    ok, _ = _runs("import torchvision")
    if ok:
        return "torchvision: imports fine on this machine, kept"
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=True)
    return "torchvision: removed (CUDA build on a machine without CUDA; it broke unsloth and Trainer imports)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true",
                        help="remove a CUDA-only torchvision on machines without CUDA; set JupyterLab's defaults")
    args = parser.parse_args(argv)
    if args.fix:
        from ..commands.lab import install_defaults

        print(fix_torchvision())
        print(install_defaults())
    failed = 0
    # each check in a fresh interpreter, all at once (imports are mostly single-threaded: this uses every core)
    running = {name: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for name, code in CHECKS.items()}
    for name, proc in running.items():
        _, err = proc.communicate()
        ok, tail = proc.returncode == 0, _last_line(err)
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {tail}"))
        failed += not ok
    if failed:
        print("set-up check failed: delete .venv and run `make setup` again; see README 'Troubleshooting'", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
