"""The `workshop` command: the notebooks' work, runnable from a terminal or a job scheduler.

    workshop profile                 print the active profile and what it implies
    workshop lab                     open the notebooks in JupyterLab (what `make workshop` runs)
    workshop build-tiny-llama        build the tiny random Llama the unit tests use into the cache
    workshop train-classifier ...    fine-tune a classifier (Trainer, optional LoRA); accelerate-ready
    workshop sft ...                 QLoRA/LoRA supervised fine-tuning of a chat model (TRL SFTTrainer)
    workshop dpo ...                 preference tuning (DPO) of notebook 03's adapter (TRL DPOTrainer)
    workshop rag ...                 base and SFT models, with and without retrieved passages, on held-out questions
    workshop run-all                 execute every notebook in order and write a summary
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import WorkshopError

# sub-command -> module implementing add_arguments(parser) and run(args) -> int
COMMANDS = {
    "lab": ("workshop_utils.commands.lab", "open the notebooks in JupyterLab with this environment's kernel"),
    "train-classifier": ("workshop_utils.commands.classifier", "fine-tune a sequence classifier with Trainer (optionally LoRA)"),
    "sft": ("workshop_utils.commands.sft", "supervised fine-tuning of a chat model with TRL SFTTrainer (QLoRA/LoRA)"),
    "dpo": ("workshop_utils.commands.dpo", "preference tuning with DPO on top of an SFT adapter (TRL DPOTrainer)"),
    "rag": ("workshop_utils.commands.rag", "retrieval vs fine-tuning: four systems scored on the same held-out questions"),
    "run-all": ("workshop_utils.commands.runall", "execute every notebook in order, headless, and write a summary"),
}


def _profile(args) -> int:
    from ..profiles import active_profile

    active_profile().show()
    return 0


def _build_tiny(args) -> int:
    from ..assets import build_tiny_llama, tiny_llama_path
    from ..paths import display_path

    path = build_tiny_llama(args.output or tiny_llama_path(create=False), overwrite=args.overwrite)
    print(f"tiny Llama ready in {display_path(path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workshop", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("profile", help="print the active profile").set_defaults(func=_profile)
    p = sub.add_parser("build-tiny-llama", help="build the tiny random Llama the unit tests use")
    p.add_argument("--output", help="folder (default: the cache)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if it exists")
    p.set_defaults(func=_build_tiny)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(func=lambda a, n=name: _missing(n))
            continue
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def _missing(name: str) -> int:
    print(f"workshop {name}: not available in this version", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkshopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
