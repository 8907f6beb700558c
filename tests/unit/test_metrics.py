import numpy as np
import pytest

from workshop_utils import metrics


def test_accuracy_f1_match_hand_computation():
    preds = [1, 1, 0, 0, 1]
    refs = [1, 0, 0, 1, 1]
    out = metrics.accuracy_f1(preds, refs)
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp=2 fp=1 fn=1


def test_agrees_with_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    out = metrics.accuracy_f1(preds, refs)
    assert out["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert out["f1"] == pytest.approx(f1_score(refs, preds))


def test_majority_baseline_on_mrpc_like_balance():
    train = [1] * 67 + [0] * 33
    evals = [1] * 68 + [0] * 32
    out = metrics.majority_baseline(train, evals)
    assert out["predicts"] == 1 and out["accuracy"] == pytest.approx(0.68)


def test_compute_metrics_from_logits():
    """Notebook 02's ``compute_metrics`` (its recipe): the one the notebook, the command and the scripts use."""
    from workshop_utils.recipes.full_finetune_trainer import compute_metrics

    logits = np.array([[2.0, -1.0], [0.1, 0.9], [0.3, 0.2]])
    scores = compute_metrics((logits, np.array([0, 1, 1])))
    assert scores == pytest.approx({"accuracy": 2 / 3, "f1": 2 / 3})  # class 1: one of two found, no false alarm
    assert compute_metrics(((logits, "hidden states"), np.array([0, 1, 1]))) == scores  # extra model outputs


def test_compute_metrics_with_more_classes_is_macro_f1():
    from workshop_utils.recipes.full_finetune_trainer import compute_metrics

    labels, preds = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])
    scores = compute_metrics((np.eye(4)[preds], labels))  # four classes, the last never seen
    per_class = [metrics.accuracy_f1((preds == c).astype(int), (labels == c).astype(int))["f1"] for c in range(4)]
    assert scores == pytest.approx({"accuracy": 0.75, "f1": float(np.mean(per_class))})


def test_rouge_l_offline():
    assert metrics.rouge_l(["the heart beats fast"], ["the heart beats fast"]) == pytest.approx(1.0)
    assert metrics.rouge_l(["zzz"], ["the heart beats fast"]) == 0.0


def test_confusion_rows_are_truth():
    assert metrics.confusion([1, 0, 1], [1, 1, 0]) == [[0, 1], [1, 1]]


def test_evaluate_modules_load_offline_and_agree_with_sklearn(monkeypatch):
    import evaluate
    from sklearn.metrics import accuracy_score, f1_score

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is out of reach: the local modules must serve
    rng = np.random.default_rng(1)
    preds, refs = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    accuracy, f1 = metrics.load_metric("accuracy"), metrics.load_metric("f1")
    assert isinstance(accuracy, evaluate.Metric) and isinstance(f1, evaluate.Metric)
    assert accuracy.compute(predictions=preds, references=refs) == {"accuracy": pytest.approx(accuracy_score(refs, preds))}
    assert f1.compute(predictions=preds, references=refs) == {"f1": pytest.approx(f1_score(refs, preds))}
    both = evaluate.combine([accuracy, f1])  # as attendees use them
    for start in range(0, 300, 100):
        both.add_batch(predictions=preds[start:start + 100], references=refs[start:start + 100])
    assert both.compute() == pytest.approx(metrics.accuracy_f1(preds, refs))


def test_unknown_metric_names_the_ones_there_are():
    with pytest.raises(ValueError, match="available: accuracy, f1"):
        metrics.load_metric("bleu")


def test_f1_of_one_class_against_the_rest():
    assert metrics.accuracy_f1([2, 1, 0, 1], [2, 1, 1, 0], positive=1)["f1"] == pytest.approx(0.5)


def _tiny_training_state(lora: bool) -> tuple[dict, int, int]:
    """Two AdamW steps on a tiny two-layer model, in full or with LoRA; (bytes, trainable, trainable tensors)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        model(torch.randn(4, 32)).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return metrics.training_state_bytes(model, optimizer), sum(p.numel() for p in trainable), len(trainable)


def test_training_state_bytes_lora_saves_by_the_ratio_of_trainable_params():
    full, full_n, full_tensors = _tiny_training_state(lora=False)
    lora, lora_n, lora_tensors = _tiny_training_state(lora=True)
    assert full["gradients"] == full["weights"] == 4 * full_n  # every fp32 weight trains
    assert lora["weights"] > full["weights"] and lora["gradients"] == 4 * lora_n
    for state, n_tensors in ((full, full_tensors), (lora, lora_tensors)):
        # AdamW: two fp32 moments per trainable parameter, plus a 4-byte step count per tensor
        assert state["optimizer_state"] == 2 * state["gradients"] + 4 * n_tensors
    assert lora["gradients"] / full["gradients"] == pytest.approx(lora_n / full_n)
    assert lora_n < full_n / 4


def test_training_state_bytes_before_any_step_and_bad_input():
    import torch

    state = metrics.training_state_bytes(torch.nn.Linear(3, 2))
    assert state == {"weights": 32, "gradients": 32, "optimizer_state": 0}  # (3 x 2 + 2) fp32 numbers
    with pytest.raises(TypeError, match="torch model"):
        metrics.training_state_bytes("not a model")


def test_metric_path_is_the_hub_name_or_the_local_folder():
    import dataclasses

    import evaluate
    from workshop_utils.profiles import make_profile

    offline = make_profile("smoke", "test", cuda=False, hub=False)
    assert metrics.metric_path("accuracy", dataclasses.replace(offline, hub=True)) == "accuracy"
    local = metrics.metric_path("f1", offline)
    assert local == str(metrics.LOCAL_METRICS / "f1")
    scored = evaluate.load(local).compute(predictions=[1, 1, 0, 1], references=[1, 0, 0, 1])
    assert scored == metrics.load_metric("f1").compute(predictions=[1, 1, 0, 1], references=[1, 0, 0, 1])
    with pytest.raises(ValueError, match="no local module for metric 'bleu'"):
        metrics.metric_path("bleu", offline)
