"""The metric names, defined once: every layer (the trainer, the config, the CLI, the study's stored
results in ``fer_core/study/result.py``, the report) reads them from here. A module of its own with
no imports, so the config and the CLI's argument parsing name them without loading scikit-learn."""

from __future__ import annotations

# What one evaluated split carries as scalars: ``metrics.classification_metrics``' own (the group
# macro-F1s with the usual head/medium/tail groups) ...
CLASSIFICATION_METRICS = ("macro_f1", "accuracy", "balanced_accuracy", "head_f1", "medium_f1", "tail_f1")
# ... plus what training adds (``train.evaluate``): action-unit macro-F1 at 0.5 and macro AUC (AU
# multitask; at the selected epoch also the macro-F1 at thresholds chosen on validation) and the loss
SCALAR_METRICS = (*CLASSIFICATION_METRICS, "au_f1", "au_auc", "au_f1_tuned", "loss")
# the per-AU lists a split has with AU labels (one entry per AU of the vocabulary; NaN: the split
# cannot score that AU), and the per-AU thresholds chosen on validation (the same in both splits)
AU_LISTS = ("au_f1_per_au", "au_auc_per_au", "au_threshold")
# those an epoch, a trial or an ensemble's members can be selected by: a study's objective.metric,
# a config's select_metric, ``fer-study ensemble --by``
SELECT_METRICS = ("macro_f1", "accuracy", "balanced_accuracy", "tail_f1")
