"""Held-out statistics for ablation tables: every interval carries seeds and images.

What is estimated. A variant's held-out score is a macro-F1 (over all classes, one class,
or a class group) computed on the held-out split (the test split at each trial's selected
epoch; the selection itself used validation only). The estimand is the score expected
over training randomness (seeds) on the population the held-out images were drawn from;
for a Δ, the expected paired difference to the baseline. Two sources of uncertainty:

- seeds: another seed gives another model (init, data order, augmentation), and
- images: the held-out set is one finite draw, the *same* images for every trial.

Why not a bootstrap. With 3-5 seeds a percentile bootstrap over seeds covers far less than
its nominal 95 % (3 values: about two thirds), and a two-level bootstrap (seeds, then images)
inherits that. A mixed model for F1 (a ratio, not a mean of per-image scores) has no
off-the-shelf form. We use a t-interval with both variance parts (a Welch/Satterthwaite
construction), each part estimated without resampling:

    d_s      per-seed score (or paired difference variant - baseline) on the held-out images
    psi_s,i  its influence function per image (delta method: F1_c = 2 TP_c / (|y=c| + |p=c|)
             is a ratio of image means, so its linearisation is exact to first order)
    model    d_s = Δ + a_s + b + e_s: a_s the seed effect, b the shared held-out-set effect
             (one draw of images for every seed), e_s the seed x image interaction
    S²       sample variance of d_s over seeds, estimates var(a) + var(e)
    V_mean   sum_i (mean_s psi_s,i)² / N², estimates var(b + mean_s e_s) = var(b) + var(e)/n
    V_bar    mean_s sum_i psi_s,i² / N², estimates var(b) + var(e)
    var(Δ̂) = var(a)/n + var(e)/n + var(b) = S²/n + [V_mean - (V_bar - V_mean)/(n - 1)]_+

The seed part S²/n has n-1 degrees of freedom, the image part is known to within O(1/N);
the interval uses Student's t with Satterthwaite's df = (n-1) (total / seed part)². Its p-value
tests Δ = 0; one Holm correction runs across the table's trained variants; the verdict is
better / worse when the Holm-adjusted p < 0.05, else "no detectable difference", and the row
gives the minimum detectable effect at 80 % power for the family-wise level (Bonferroni's
alpha/m, the first Holm step) and P(variant > baseline) over seed pairs.
``tests/report/test_stats_simulation.py`` proves the construction on simulated studies with a
known truth: family-wise error under the null, coverage of Δ and of per-class Δ for 3, 5 and
10 seeds, and failure when the correction or either variance part is removed. Measured there
(1000 null studies of 18 variants): any decisive verdict in 4.9 % of studies with 3 seeds and
4.0 % with 5; 95 % intervals covered the true Δ in 94-95 % (300 studies per setting).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from fer_core.metrics import softmax  # one softmax for the core and the report (stats.softmax)

N_BOOT = 5000
ALPHA = 0.05
POWER = 0.80


@dataclass(frozen=True)
class Estimate:
    """Held-out scores (or paired Δs) over seeds with their two variance parts. Fields are floats,
    or arrays of one shape when many estimates are made at once (classes, variants)."""

    mean: Any
    se_seeds: Any  # sqrt(S²/n): training randomness
    se_images: Any  # the shared held-out set's part (see the module docstring)
    df: Any
    n: int  # seeds (pairs for a Δ)
    p_improve: Any = float("nan")  # Δ only: share of seed pairs with d > 0 (ties count half)
    sd: Any = float("nan")  # sd of the per-seed values

    @property
    def se(self) -> Any:
        return np.hypot(self.se_seeds, self.se_images)

    def ci(self, alpha: float = ALPHA) -> tuple[Any, Any]:
        se = np.asarray(self.se, dtype=float)
        with np.errstate(invalid="ignore"):
            half = np.where(se > 0, stats.t.ppf(1 - alpha / 2, self.df) * se, 0.0)
        half = np.where(np.isnan(se), np.nan, half)  # one seed: no interval
        return self.mean - half, self.mean + half

    @property
    def p_value(self) -> Any:
        """Two-sided p of mean = 0 (t with Satterthwaite df); 1 or 0 for a zero-spread Δ."""
        se = np.asarray(self.se, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.abs(self.mean) / np.where(se > 0, se, 1.0)
            p = np.where(se > 0, 2 * stats.t.sf(t, self.df), np.where(np.asarray(self.mean) == 0, 1.0, 0.0))
        return np.where(np.isnan(se), np.nan, p)

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> Any:
        """Smallest |Δ| this design detects with ``power`` at two-sided level ``alpha``."""
        with np.errstate(invalid="ignore"):
            return (stats.t.ppf(1 - alpha / 2, self.df) + stats.t.ppf(power, self.df)) * self.se


def f1_parts(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 of each row of ``preds`` (..., N) against ``labels`` (N,): (..., K), and each
    image's influence on it (..., N, K): the first-order change of F1_c when the image's weight
    changes, scaled so that var(F1_c) ~= sum_i psi_i² / N². A class absent from truth and
    predictions scores 0 with influence 0 (sklearn's ``zero_division=0``). Means over classes give
    macro-F1 and group F1 with their influences (the influence is linear)."""
    p = np.asarray(preds, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    cls = np.arange(num_classes)
    Y = (y[:, None] == cls).astype(float)  # (N, K)
    P = (p[..., None] == cls).astype(float)  # (..., N, K)
    a = 2.0 * Y * P  # 2 [y=c][p=c]
    b = Y + P  # [y=c] + [p=c]
    num, den = a.sum(-2), b.sum(-2)  # (..., K)
    f1 = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    scale = np.divide(n, den, out=np.zeros_like(den), where=den > 0)  # 1 / (den / N)
    psi = (a - f1[..., None, :] * b) * scale[..., None, :]
    return f1, psi


def estimate(values: np.ndarray, psi: np.ndarray, base_values: np.ndarray | None = None,
             base_psi: np.ndarray | None = None, *, seed_part: bool = True, image_part: bool = True) -> Estimate:
    """The mean over seeds (axis 0 of ``values``; ``psi`` has the images on axis 1) or, with a
    baseline paired seed by seed, the mean Δ, with both variance parts. Trailing axes are
    estimated independently (classes, groups). ``seed_part`` / ``image_part`` switch a part off;
    only the simulation test does, to show that the intervals fail without either."""
    d = np.asarray(values, dtype=float)
    g = np.asarray(psi, dtype=float)
    if base_values is not None:
        d = d - np.asarray(base_values, dtype=float)
        g = g - np.asarray(base_psi, dtype=float)
    n, big_n = d.shape[0], g.shape[1]
    mean = d.mean(0) if n else np.full(d.shape[1:], np.nan)
    nan = np.full(np.shape(mean), np.nan)
    p_imp = ((d > 0).sum(0) + 0.5 * (d == 0).sum(0)) / n if n and base_values is not None else nan
    if n < 2:
        return Estimate(mean, nan, nan, nan, n, p_imp, nan)
    s2 = d.var(0, ddof=1)
    v_mean = (g.mean(0) ** 2).sum(0) / big_n**2
    v_bar = (g**2).sum(1).mean(0) / big_n**2
    var_e = np.maximum(v_bar - v_mean, 0.0) * n / (n - 1)  # seed x image interaction, from the images
    v_seed = s2 / n if seed_part else np.zeros_like(s2)
    v_img = np.maximum(v_mean - var_e / n, 0.0) if image_part else 0.0 * v_mean
    total = v_seed + v_img
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(v_seed > 0, (n - 1) * (total / np.where(v_seed > 0, v_seed, 1.0)) ** 2, np.inf)
    return Estimate(mean, np.sqrt(v_seed), np.sqrt(v_img), np.minimum(df, 1e6), n, p_imp, np.sqrt(s2))


def estimate_nested(values: np.ndarray, psi: np.ndarray, base_values: np.ndarray | None = None,
                    base_psi: np.ndarray | None = None) -> Estimate:
    """``estimate`` for nested units: ``values`` (R, S), ``psi`` (R, S, N). The R outer units are
    independent draws (a search repeated R times, each choosing its own config), the S inner ones
    (fresh training seeds of that config) share their outer unit's draw, so they are not independent
    of each other. Each outer unit's inner values (and influences) are averaged first and the estimate
    runs over the R means: its seed part then carries both the outer draw and the seeds, with R-1
    df. Pooling the R x S values as independent would leave the outer draw's variance out
    (``tests/report/test_stats_simulation.py`` shows both on simulated searches with a known truth)."""
    def outer(v, g):
        return (None, None) if v is None else (np.asarray(v, dtype=float).mean(1), np.asarray(g, dtype=float).mean(1))

    return estimate(*outer(values, psi), *outer(base_values, base_psi))


def pool_df(estimates: list[Estimate]) -> list[Estimate]:
    """The same estimates with Satterthwaite's df from the family's pooled variance ratio.

    Per row, df = (n-1) (1 + v_images / v_seeds)² uses that row's own S² (2 df at 3 seeds): a
    by-chance small S² then shrinks the interval *and* inflates its df, and the family-wise error
    at Holm's small levels rises above 5 % (measured in an early version of the simulation with a
    strong seed part: 17 % with 3 seeds, 18 variants). The rows of
    one table share their seeds and held-out images, so the ratio is pooled over them (medians of
    both parts, elementwise for per-class arrays); each row keeps its own standard error."""
    if not estimates:
        return []
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (a group without classes)
        v_seed = np.nanmedian(np.stack([np.asarray(e.se_seeds, dtype=float) ** 2 for e in estimates]), axis=0)
        v_img = np.nanmedian(np.stack([np.asarray(e.se_images, dtype=float) ** 2 for e in estimates]), axis=0)
        ratio = np.where(v_seed > 0, v_img / np.where(v_seed > 0, v_seed, 1.0), np.inf)
    return [replace(e, df=np.minimum((e.n - 1) * (1 + ratio) ** 2, 1e6)) if e.n >= 2 else e for e in estimates]


def unstack(est: Estimate) -> list[Estimate]:
    """An estimate made for many rows at once (leading axis) as one estimate per row."""
    fields = ("mean", "se_seeds", "se_images", "df", "p_improve", "sd")
    arrays = {f: np.broadcast_to(np.asarray(getattr(est, f), dtype=float), np.shape(est.mean)) for f in fields}
    return [Estimate(n=est.n, **{f: arrays[f][i] for f in fields}) for i in range(np.shape(est.mean)[0])]


def restack(rows: list[Estimate]) -> Estimate:
    fields = ("mean", "se_seeds", "se_images", "df", "p_improve", "sd")
    return Estimate(n=rows[0].n, **{f: np.stack([np.asarray(getattr(r, f), dtype=float) for r in rows]) for f in fields})


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


# -- calibration (from stored logits) ---------------------------------------------------------------
def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label confidence vs accuracy in ``bins`` equal-width bins (Guo et al., ICML 2017)."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (lo, hi] bins
    count = np.bincount(idx, minlength=bins).astype(float)
    acc = np.divide(np.bincount(idx, correct, bins), count, out=np.full(bins, np.nan), where=count > 0)
    mean_conf = np.divide(np.bincount(idx, conf, bins), count, out=np.full(bins, np.nan), where=count > 0)
    return {"count": count, "accuracy": acc, "confidence": mean_conf}


def calibration(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, float]:
    """ECE (``bins`` equal-width bins, top label), NLL (mean) and Brier score (mean over images of
    the squared error summed over classes) of one trial's held-out logits."""
    y = np.asarray(labels, dtype=np.int64)
    probs = softmax(logits)
    r = reliability(probs, y, bins)
    w = r["count"] / max(1, len(y))
    ece = float(np.nansum(w * np.abs(r["accuracy"] - r["confidence"])))
    z = np.asarray(logits, dtype=np.float64)
    logz = z.max(1) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))
    nll = float((logz - z[np.arange(len(y)), y]).mean())
    onehot = np.eye(probs.shape[1])[y]
    brier = float(((probs - onehot) ** 2).sum(1).mean())
    return {"ece": ece, "nll": nll, "brier": brier}


# -- descriptive helpers kept for derived rows (TTA gain, ensembles) ----------------------------------
def bootstrap_mean_ci(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over seeds; NaNs when fewer than two values."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


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
