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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row max subtracted)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mean_nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (probabilities floored at 1e-12); NaN without images."""
    y = np.asarray(labels, dtype=np.int64)
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean()) if len(y) else float("nan")


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


# -- action units, one by one -------------------------------------------------------------------
# AU prevalence runs from about 1 % to 87 %: one threshold and one macro number hide the rare AUs,
# so each AU gets its own F1, AUC and decision threshold (chosen on validation, applied to test).
def au_pos_weight(au_train: np.ndarray) -> np.ndarray:
    """Balanced BCE: ``pos_weight = n_neg / n_pos`` per AU on the training split (1 for an AU with
    no positive or no negative image: its positive term has nothing to balance)."""
    au = np.asarray(au_train, dtype=np.float64)
    pos = au.sum(0)
    neg = len(au) - pos
    return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0).astype(np.float32)


def choose_au_thresholds(au_true: np.ndarray, au_prob: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per AU, the threshold (predict positive when prob >= t) with the highest F1 on these labels;
    ``default`` for an AU without a positive (its F1 is undefined). Among equal F1s the highest
    threshold wins (fewest positives predicted)."""
    y = np.asarray(au_true) > 0.5
    out = np.full(y.shape[1], default, dtype=np.float64)
    for a in range(y.shape[1]):
        n_pos = int(y[:, a].sum())
        if n_pos == 0:
            continue
        order = np.argsort(-au_prob[:, a], kind="stable")
        p, t = au_prob[order, a], y[order, a]
        tp = np.cumsum(t)
        last = np.r_[p[1:] != p[:-1], True]  # predicting the first k+1 positive: only at a tie group's end
        k = np.arange(1, len(p) + 1)
        f1 = np.where(last, 2 * tp / (k + n_pos), -1.0)
        out[a] = float(p[int(np.argmax(f1))])
    return out


def au_metrics(au_true: np.ndarray, au_prob: np.ndarray, thresholds: np.ndarray | float = 0.5) -> dict:
    """Per-AU F1 (at ``thresholds``) and ROC AUC, NaN for an AU a split cannot score (F1: no positive;
    AUC: no positive or no negative), and their macro means over the scored AUs."""
    from sklearn.metrics import roc_auc_score

    y = (np.asarray(au_true) > 0.5).astype(int)
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],))
    pred = (au_prob >= th).astype(int)
    f1, auc = [], []
    for a in range(y.shape[1]):
        pos = y[:, a].sum()
        f1.append(float(f1_score(y[:, a], pred[:, a], zero_division=0)) if pos else float("nan"))
        auc.append(float(roc_auc_score(y[:, a], au_prob[:, a])) if 0 < pos < len(y) else float("nan"))

    def macro(v: list[float]) -> float:
        ok = [x for x in v if x == x]
        return float(np.mean(ok)) if ok else float("nan")

    return {"au_f1_tuned": macro(f1), "au_auc": macro(auc), "au_f1_per_au": f1, "au_auc_per_au": auc,
            "au_threshold": [float(x) for x in th]}
