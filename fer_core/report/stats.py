"""Seed-aware statistics for ablation tables: bootstrap CIs, paired deltas, Holm correction.

With 3 seeds per variant a percentile bootstrap over seeds is coarse, so where the
validation predictions are stored the table also gives a bootstrap over validation
images (the same resampled images for every seed, then the seed mean), which shows how
much of a difference the finite validation set can explain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

N_BOOT = 5000
ALPHA = 0.05


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over seeds; NaNs when fewer than two values."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


def paired_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value of a vs b (paired by seed); NaN when it cannot be computed."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(a) != len(b):
        return float("nan")
    d = a - b
    if np.allclose(d, d[0]):  # no spread: the test is undefined (identical runs, or a constant shift)
        return 1.0 if np.allclose(d, 0) else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), np.nan)
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def macro_f1_from_confusion(cm: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """Macro-F1 over the last two axes of confusion matrices (..., K, K), over ``classes`` (all by
    default); a class absent from both truth and prediction counts as 0, as sklearn's
    ``zero_division=0`` with fixed labels."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return (f1 if classes is None else f1[..., list(classes)]).mean(axis=-1)


def image_bootstrap_ci(
    labels: np.ndarray,
    preds_by_seed: Sequence[np.ndarray],
    num_classes: int,
    n_boot: int = 1000,
    seed: int = 0,
    baseline_by_seed: Sequence[np.ndarray] | None = None,
    classes: Sequence[int] | None = None,
) -> tuple[float, float]:
    """CI of the seed-mean macro-F1 over ``classes`` (all by default; the tail classes for tail
    F1), or of its paired delta vs a baseline, over resampled validation images; every seed
    (and the baseline) sees the same resampled images."""
    if not preds_by_seed:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n, k = len(labels), num_classes
    idx = rng.integers(0, n, size=(n_boot, n))
    y = labels[idx]

    def seed_mean(preds: Sequence[np.ndarray]) -> np.ndarray:
        scores = []
        for p in preds:
            codes = y * k + p[idx]  # (n_boot, n)
            offs = (np.arange(n_boot) * k * k)[:, None]
            cm = np.bincount((codes + offs).ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k)
            scores.append(macro_f1_from_confusion(cm, classes))
        return np.mean(scores, axis=0)

    dist = seed_mean(preds_by_seed)
    if baseline_by_seed is not None:
        dist = dist - seed_mean(baseline_by_seed)
    lo, hi = np.quantile(dist, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)
