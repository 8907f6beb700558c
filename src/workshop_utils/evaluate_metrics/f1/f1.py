"""F1 as an ``evaluate`` metric module: the harmonic mean of precision and recall (of ``pos_label`` by default)."""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 = 2 * precision * recall / (precision + recall), for the positive class by default.",
            citation="",
            inputs_description="predictions (list of int): predicted labels; references (list of int): true labels; "
                               "pos_label (int, default 1); average ('binary', 'macro', 'micro' or 'weighted').",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        score = f1_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight, zero_division=0)
        return {"f1": float(score)}
