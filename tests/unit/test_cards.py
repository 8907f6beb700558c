"""Model cards written offline beside what the notebooks save."""

import json
import os
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from workshop_utils import WorkshopError, profiles
from workshop_utils.assets import minilm_path, tiny_llama_path
from workshop_utils.cards import (Q4_1_TAG, base_license, hub_id, local_copy, machine_paths, make_portable,
                                  write_model_card)
from workshop_utils.paths import data_dir, repo_root


def test_packaged_models_are_credited_to_their_hub_originals(tmp_path):
    assert hub_id(str(minilm_path())) == profiles.MINILM_HUB
    assert hub_id(str(tmp_path / "smollm2-135m-instruct-0.1.2-v3-1")) == profiles.SMOLLM2
    assert hub_id("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert hub_id(str(tmp_path)) is None  # some other folder: no claim about where it came from


def test_card_holds_metadata_results_and_no_machine_paths(tmp_path):
    card = write_model_card(tmp_path, title="t", summary="s", base_model=str(minilm_path()), task="text-classification",
                            dataset=str(data_dir() / "paraphrase"), scores={"accuracy": 0.8312, "f1": 0.87},
                            made_by="a test")
    text = (tmp_path / "README.md").read_text()
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.license == "apache-2.0" and loaded.data.base_model == profiles.MINILM_HUB
    assert {r.metric_type: r.metric_value for r in loaded.data.eval_results} == {"accuracy": 0.8312, "f1": 0.87}
    assert loaded.data.eval_results[0].dataset_name == "data/paraphrase"
    assert str(repo_root()) not in text and "hf_" not in text
    assert "push_to_hub" in text and card.data.pipeline_tag == "text-classification"


# --------------------------------------------------------------------------- the licence comes from the base model
@pytest.mark.parametrize("base, licence", [
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3"),
    ("unsloth/llama-3-8b-Instruct", "llama3"),
    ("unsloth/llama-3-8b-Instruct-bnb-4bit", "llama3"),
    ("unsloth/Meta-Llama-3-8B-Instruct-bnb-4bit", "llama3"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    ("google-bert/bert-base-uncased", "apache-2.0"),
    ("bert-base-uncased", "apache-2.0"),
    ("meta-llama/Meta-Llama-3-70B-Instruct", "other"),  # another model of the family: not claimed
    ("someone/llama-3-8b-instruct", "other"),  # a copy by an owner the workshop does not know
    ("someone/some-model", "other"),
    (None, "other"),
])
def test_licence_comes_from_the_base_model(base, licence):
    assert base_license(base) == licence


@pytest.mark.parametrize("name, cuda", [("gpu", True), ("cpu", False), ("offline", False)])
def test_every_model_a_profile_uses_has_a_known_licence(name, cuda, monkeypatch):
    import workshop_utils.assets as assets

    monkeypatch.setattr(assets, "smollm2_path", lambda: Path("/nowhere/smollm2-135m-instruct-0.1.2-v3-1"))  # no conversion
    profile = profiles.make_profile(name, "", cuda=cuda, hub=name != "offline")
    for model in (profile.clf_model, profile.llm_model, profile.llm_model_bnb):
        assert base_license(hub_id(model)) != "other", (name, model)


def _card(folder, base_model, **extra):
    write_model_card(folder, title="t", summary="s", base_model=base_model, task="text-generation", dataset="data/medquad",
                     scores={"ROUGE-L": 0.2}, made_by="a test", library="peft", **extra)
    return ModelCard.load(Path(folder) / "README.md"), (Path(folder) / "README.md").read_text()


def test_llama3_adapter_card_carries_the_llama3_licence(tmp_path):
    card, text = _card(tmp_path, profiles.LLAMA3_8B_UNSLOTH)
    assert card.data.license == "llama3" and card.data.base_model == profiles.LLAMA3_8B_UNSLOTH
    assert "Built with Meta Llama 3" in text and "apache" not in text.lower()


def test_unknown_base_gives_other_and_asks_the_author(tmp_path):
    card, text = _card(tmp_path / "a", str(tmp_path))  # a local folder the workshop knows nothing about
    assert card.data.license == "other" and card.data.base_model is None
    assert "not filled in" in text and "license:" in text and "apache" not in text.lower()
    assert str(tmp_path) not in text  # named by its folder name only
    card, _ = _card(tmp_path / "b", "someone/some-model")
    assert card.data.license == "other" and card.data.base_model == "someone/some-model"


def test_card_of_the_packaged_smollm2_says_it_was_the_q4_1_gguf(tmp_path):
    packaged = tmp_path / "smollm2-135m-instruct-0.1.2-v3-1"  # what assets.smollm2_path() is called
    card, text = _card(tmp_path / "a", str(packaged))
    assert card.data.base_model == profiles.SMOLLM2 and card.data.license == "apache-2.0"
    assert Q4_1_TAG in card.data.tags
    assert "Q4_1 GGUF quantisation" in text and "dequantised to float32" in text and "SmolLM2-135M-Instruct.Q4_1.gguf" in text
    card, text = _card(tmp_path / "b", profiles.SMOLLM2)  # the hub release itself: no such note
    assert Q4_1_TAG not in card.data.tags and "Q4_1" not in text


# --------------------------------------------------------------------------- portable folders
CARD = dict(title="t", summary="s", task="text-generation", dataset="data/medquad", scores={"ROUGE-L": 0.2},
            made_by="a test")


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A LoRA adapter on the tiny Llama as peft saves it (its config names the base by this machine's path),
    with TRL's kind of blank README, and the model with the adapter, for comparing outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("saved") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path())
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                            init_lora_weights=False))  # B not zero: the adapter changes the outputs
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_llama_path()).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: license\n---\nfine-tuned version of [None](https://huggingface.co/None)\n")
    assert str(tiny_llama_path()) in (folder / "adapter_config.json").read_text()  # the problem being fixed
    return folder, model.eval()


def _copy_elsewhere(folder, tmp_path):
    """The folder as another machine gets it: copied to an unrelated place."""
    target = tmp_path / "elsewhere" / folder.name
    shutil.copytree(folder, target)
    return target


def _no_machine_paths(folder, *also):
    problems = machine_paths(folder)
    for file in folder.iterdir():
        text = file.read_bytes()
        for place in (str(repo_root()), f"/{repo_root().name}/.cache", "/.cache/", str(tiny_llama_path()), *map(str, also)):
            if file.suffix != ".safetensors" and place.encode() in text:
                problems.append(f"{file.name}: {place}")
    return problems


def _same_outputs(model, loaded):
    import torch

    ids = torch.tensor([[1, 7, 42, 99, 5]])
    with torch.no_grad():
        return torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5)


def test_portable_adapter_loads_elsewhere_from_the_hub_cache_offline(tiny_adapter, tmp_path):
    """The adapter names its base by hub id; on a machine whose Hugging Face cache holds that base, offline,
    AutoPeftModelForCausalLM loads a copy of the folder (the tiny Llama plays a hub model here)."""
    from peft import AutoPeftModelForCausalLM

    saved, model = tiny_adapter
    folder = _copy_elsewhere(saved, tmp_path / "made")
    card = make_portable(folder, str(tiny_llama_path()), base_hub_id="workshop-test/tiny-llama", library="peft", **CARD)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "workshop-test/tiny-llama"
    assert _no_machine_paths(folder, tmp_path) == []
    assert card.data == ModelCard.load(folder / "README.md").data
    assert card.data.base_model == "workshop-test/tiny-llama" and card.data.license == "other"
    assert "None" not in card.text and "AutoPeftModelForCausalLM" in card.text

    hf_cache = tmp_path / "hf-cache"  # what a download of the base left in the Hugging Face cache
    repo = hf_cache / "models--workshop-test--tiny-llama"
    commit = "0" * 40
    shutil.copytree(tiny_llama_path(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    moved = _copy_elsewhere(folder, tmp_path / "other-machine")
    shutil.rmtree(folder)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py: the hub is never asked
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(moved), cache_dir=str(hf_cache)).eval()
    assert _same_outputs(model, loaded)


def test_workshop_maps_the_named_base_to_its_local_copy(tiny_adapter, tmp_path, monkeypatch):
    """How workshop dpo and notebook 05 load an adapter's base on this machine: local_copy of the name its config holds."""
    import workshop_utils.assets as assets
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    saved, model = tiny_adapter
    # a base with no hub id (the tiny Llama in the workshop's cache): named by its folder name, found again here
    folder = _copy_elsewhere(saved, tmp_path / "a")
    make_portable(folder, str(tiny_llama_path()), library="peft", **CARD)
    assert _no_machine_paths(folder, tmp_path) == []
    named = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    assert named == tiny_llama_path().name and local_copy(named) == str(tiny_llama_path())
    assert "base_model_name_or_path" in ModelCard.load(folder / "README.md").text  # the card says how to point it elsewhere
    # the packaged SmolLM2's hub id, offline, is its packaged copy (the tiny Llama stands in, to skip the conversion)
    monkeypatch.setattr(assets, "smollm2_path", lambda: tiny_llama_path())
    folder = _copy_elsewhere(saved, tmp_path / "b")
    make_portable(folder, str(tmp_path / "smollm2-135m-instruct-0.1.2-v3-1"), base_hub_id=None, library="peft", **CARD)
    named = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    assert named == profiles.SMOLLM2 and local_copy(named, offline=False) == profiles.SMOLLM2
    base = AutoModelForCausalLM.from_pretrained(local_copy(named, offline=True))
    assert _same_outputs(model, PeftModel.from_pretrained(base, str(folder)).eval())
    assert local_copy(profiles.MINILM_HUB, offline=True) == str(minilm_path())
    assert local_copy("someone/some-model", offline=True) == "someone/some-model"
    assert local_copy(str(tmp_path)) == str(tmp_path)


def test_a_saved_model_folder_is_made_portable_too(tiny_adapter, tmp_path):
    """A merged model and its tokenizer: the keys recording how this machine loaded them go, the card comes in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "merged"
    AutoModelForCausalLM.from_pretrained(tiny_llama_path()).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_llama_path()).save_pretrained(folder)
    for name, key in (("config.json", "_name_or_path"), ("tokenizer_config.json", "name_or_path")):  # as older versions wrote
        data = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**data, key: str(tiny_llama_path())}))
    assert machine_paths(folder)
    packaged = str(tmp_path / "smollm2-135m-instruct-0.1.2-v3-1")
    make_portable(folder, packaged, library="transformers", **CARD)
    assert _no_machine_paths(folder, tmp_path) == []
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert not {"name_or_path", "is_local", "local_files_only"} & set(tokenizer_config)
    assert "_name_or_path" not in json.loads((folder / "config.json").read_text())
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == profiles.SMOLLM2 and Q4_1_TAG in card.data.tags
    moved = _copy_elsewhere(folder, tmp_path / "other")
    assert AutoModelForCausalLM.from_pretrained(str(moved)).config.vocab_size > 0


def test_make_portable_needs_a_saved_folder(tmp_path):
    with pytest.raises(WorkshopError, match="save the model there first"):
        make_portable(tmp_path / "missing", "someone/some-model", **CARD)


def test_what_still_names_a_machine_path_is_reported(tmp_path, capsys):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "notes.txt").write_text(f"trained in {repo_root()}\n")  # a file make_portable does not rewrite
    make_portable(folder, "someone/some-model", **CARD)
    assert f"notes.txt: {repo_root()}" in machine_paths(folder)  # (and the home folder, when the repository is in it)
    assert capsys.readouterr().err.startswith("warning: saved/notes.txt: ")
