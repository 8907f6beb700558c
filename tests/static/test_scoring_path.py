"""One scoring path: every notebook and command that reports NLL, ROUGE-L, stop rate or looping of a chat model's
answers gets them from ``answers.score_chat_model``, which names its decoding; nothing scores answers its own way."""

import re

import pytest

from conftest import ROOT

SOURCES = ROOT / "notebooks" / "_sources"
SCORING_NOTEBOOKS = ["01_baseline_evaluation", "03_qlora_llama3_sft", "04_inference_pipeline", "05_preference_dpo",
                     "06_rag_vs_finetune"]
# the metric functions themselves: only answers.py (the scoring function) and metrics.py (their home) may call them
METRIC_CALLS = re.compile(r"\b(rouge_l|eos_rate|repetition_rate|score_answers|semantic_similarity)\(")
# a stop rate counted by hand from a pipeline's answers (how 04 once scored them)
HAND_SCORING = re.compile(r"sum\(s for _, s in|sum\(stopped")


def notebook_text(stem: str) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(SOURCES.glob(f"{stem}*.py")))


def code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.lstrip().startswith("#")]


@pytest.mark.parametrize("stem", SCORING_NOTEBOOKS)
def test_notebooks_score_answers_through_the_shared_function(stem):
    text = notebook_text(stem)
    assert "score_chat_model(" in text, f"{stem} reports answer scores without answers.score_chat_model"
    offending = [line.strip() for line in code_lines(text) if METRIC_CALLS.search(line) or HAND_SCORING.search(line)]
    assert not offending, f"{stem} scores answers its own way: {offending}"


def test_commands_and_scripts_score_through_the_shared_function():
    files = [p for p in (ROOT / "src" / "workshop_utils").rglob("*.py") if p.name not in ("answers.py", "metrics.py")]
    files += sorted((ROOT / "scripts").glob("*.py"))
    offending = {str(p.relative_to(ROOT)): line.strip() for p in files
                 for line in code_lines(p.read_text(encoding="utf-8")) if METRIC_CALLS.search(line)}
    assert not offending, offending


def test_the_rule_catches_a_notebook_that_scores_by_hand(tmp_path):
    """The check itself can fail: a line like 04's old scoring is found."""
    old_04 = 'llm_scores = {"base": {"rougeL": metrics.rouge_l([a for a, _ in base_answers], references),\n' \
             '             "eos_rate": sum(s for _, s in base_answers) / n_eval}}'
    assert [line for line in code_lines(old_04) if METRIC_CALLS.search(line) or HAND_SCORING.search(line)]


def test_scores_name_their_decoding():
    from workshop_utils.answers import decoding_name

    assert decoding_name(1.0) == "plain greedy"
    assert decoding_name(1.1) == "greedy, repetition penalty 1.1 on the answer's own tokens"


def test_score_chat_model_scores_given_answers_without_generating(monkeypatch):
    from workshop_utils import answers as answers_module
    from workshop_utils.answers import Answer, score_chat_model

    monkeypatch.setattr(answers_module, "generate_answers", lambda *a, **k: pytest.fail("answers were given"))
    given = [Answer("Gout is arthritis.", True, 4), Answer("It is it is it is it is a thing.", False, 40)]
    refs = ["Gout is a form of arthritis.", "A rare disease. A rare disease. A rare disease."]
    scores = score_chat_model(None, None, ["What is gout?", "What is X?"], refs, max_new_tokens=8, answers=given,
                              nll=False, repetition_penalty=1.1)
    assert scores["eos_rate"] == 0.5 and scores["repetition"] == 0.5 and "nll" not in scores
    assert scores["references_looping"] == 0.5 and scores["answered"] == 2 and scores["answers"] == given
    assert scores["decoding"].startswith("greedy, repetition penalty 1.1")
    with pytest.raises(ValueError, match="1 answers given for 2 questions"):
        score_chat_model(None, None, ["a?", "b?"], refs, max_new_tokens=8, answers=given[:1], nll=False)
