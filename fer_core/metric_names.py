"""The metric names, defined once: every layer (the trainer, the config, the CLI, the study's stored
results in ``fer_core/study/result.py``, the report) reads them from here. A module of its own with
no imports, so the config and the CLI's argument parsing name them without loading scikit-learn."""

from __future__ import annotations

# What one evaluated split carries as scalars: ``metrics.classification_metrics``' own (the group
# macro-F1s with the usual head/medium/tail groups) ...
CLASSIFICATION_METRICS = ("macro_f1", "accuracy", "balanced_accuracy", "head_f1", "medium_f1", "tail_f1")
# ... plus what training adds (``train.evaluate``): action-unit macro-F1 (AU multitask) and the loss
SCALAR_METRICS = (*CLASSIFICATION_METRICS, "au_f1", "loss")
# those an epoch, a trial or an ensemble's members can be selected by: a study's objective.metric,
# a config's select_metric, ``fer-study ensemble --by``
SELECT_METRICS = ("macro_f1", "accuracy", "balanced_accuracy", "tail_f1")
