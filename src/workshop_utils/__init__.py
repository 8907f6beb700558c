"""Helpers for the Hugging Face fine-tuning workshop.

Everything that is *not* the lesson lives here: run-profile detection, data loading and validation,
metrics, the results record shared by the notebooks, plots, and the `workshop` command. The lesson
itself (TrainingArguments, Trainer, LoraConfig, SFTTrainer, pipeline) stays in the notebooks.

Importing this package is cheap: heavy libraries are imported inside the functions that need them,
so a profile can switch the Hugging Face libraries to offline mode *before* they are imported.
"""

import logging as _logging

__version__ = "0.1.0"

# Import-time warnings from optional fast paths that this stack never uses on a CPU, printed every
# time transformers/peft import them and alarming to attendees ("Failed to load ..."):
# torchao's CUDA-only .so files, bitsandbytes' optional `kernels` package for CPU 4-bit matmuls,
# and torch's notice about its own Enum registration. Real errors from these libraries still show.
for _name in ("torchao", "bitsandbytes.backends.cpu.ops", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)


class WorkshopError(Exception):
    """An error whose message is one line saying what is wrong and how to fix it.

    In Jupyter it shows as that line alone, without a stack trace (IPython calls
    ``_render_traceback_`` when an exception has one); the cell still fails, so CI and
    ``workshop run-all`` still stop on it.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class DataError(WorkshopError, ValueError):
    """A data file or dataset that cannot be used as it is."""


class MissingArtifactError(WorkshopError, FileNotFoundError):
    """Something an earlier notebook or command makes is not there yet."""
