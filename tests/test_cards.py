"""Model cards written offline beside what the notebooks save."""

from huggingface_hub import ModelCard

from workshop_utils import profiles
from workshop_utils.assets import minilm_path
from workshop_utils.cards import hub_id, write_model_card
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
