"""Validation/test metrics with scikit-learn; head/medium/tail by train class count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def class_groups(train_counts: Sequence[int], tail_max_count: int, head_min_count: int) -> dict[str, list[int]]:
    """Classes by train count: tail (<= tail_max_count), head (>= head_min_count), medium between.

    On RAF-CE with the defaults (100, 300): tail = 12, 13, 8, 4.
    """
    groups: dict[str, list[int]] = {"head": [], "medium": [], "tail": []}
    for c, n in enumerate(train_counts):
        key = "tail" if n <= tail_max_count else "head" if n >= head_min_count else "medium"
        groups[key].append(c)
    return groups


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    groups: dict[str, list[int]] | None = None,
) -> dict:
    """macro-F1 (all classes, absent ones count 0 only when predicted), accuracy, balanced accuracy,
    per-class P/R/F1, confusion matrix and the group macro-F1s."""
    labels = list(range(num_classes))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out = {
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "precision": [float(v) for v in p],
        "recall": [float(v) for v in r],
        "f1": [float(v) for v in f],
        "support": [int(v) for v in support],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    for name, members in (groups or {}).items():
        out[f"{name}_f1"] = float(np.mean([f[c] for c in members])) if members else float("nan")
    return out


def au_macro_f1(au_true: np.ndarray, au_prob: np.ndarray, threshold: float = 0.5) -> float:
    """Macro-F1 over the AUs that occur in ``au_true`` (an AU never present has no F1)."""
    present = au_true.sum(axis=0) > 0
    if not present.any():
        return float("nan")
    pred = (au_prob >= threshold).astype(int)
    return float(f1_score(au_true[:, present].astype(int), pred[:, present], average="macro", zero_division=0))
