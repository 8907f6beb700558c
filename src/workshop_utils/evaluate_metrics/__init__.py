"""The workshop's own ``evaluate`` metric modules, loaded by path when the Hugging Face Hub is out of reach.

``evaluate.load("accuracy")`` downloads the metric's script from the Hub. Offline, ``workshop_utils.metrics
.load_metric`` passes ``evaluate.load`` one of these folders instead: the same ``evaluate.Metric`` interface
(``compute``, ``add_batch``, ``evaluate.combine``), the same input names and the same output key as the Hub
module of that name, computed with scikit-learn.
"""
