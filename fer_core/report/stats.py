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
    S²       sample variance of d_s over seeds, estimates var(a) + var(e), n-1 df
    V_mean   sum_i (mean_s psi_s,i)² / N², estimates var(b + mean_s e_s) = var(b) + var(e)/n
    V_bar    mean_s sum_i psi_s,i² / N², estimates var(b) + var(e)
    var(Δ̂) = var(a)/n + var(e)/n + var(b) = S²/n + [V_mean - (V_bar - V_mean)/(n - 1)]_+

The image part has a finite df too. A class's F1 rests on the few held-out images that carry influence on
it (those of the class and those predicted as it, by either model of a pair; m_c of them, averaged over
seeds), so the per-class and group intervals give its image part m_c - 1 df; with the class's own test
images alone (n_c - 1) a class of 5 test images over-covered at 0.99 where the image part dominates. The
objective (its interval, and the test and MDE, judged at Holm's level far in the t's tail) keeps the
conservative n_c - 1 per class: m_c - 1 there raised the simulated family-wise error at 3 seeds from 0.06
to 0.075 (benchmarks/RESULTS.md). A macro or group score combines its classes' parts with Satterthwaite's
df (``satterthwaite``). The interval and the test use Student's t with the Welch-Satterthwaite df of the
seed part (df below) and the image part.

The seed part: empirical-Bayes moderated variances across the table's rows (``moderate``).
Smyth, G. K. (2004), "Linear models and empirical Bayes methods for assessing differential
expression in microarray experiments", Stat. Appl. Genet. Mol. Biol. 3(1), Art. 3 (limma's
moderated t). Each row's S² (d = n-1 df, 2 at 3 seeds) is shrunk toward a prior s0² fitted
across the rows, s̃² = (d0 s0² + d S²) / (d0 + d), and the row's seed part gets d + d0 df: rows
that share seeds and images borrow strength, yet a row whose seeds really spread more keeps a
larger variance (its own S² stays in the mix), so unequal seed variances across rows survive.
The prior (s0², d0) is Smyth's moment estimator (limma's ``fitFDist``: log S² has mean
log s0² + digamma(d0/2) - log(d0/2) + ... and variance trigamma(d/2) + trigamma(d0/2)).
Where this differs from limma, and why:

1. Two variance parts. Only the seed part is moderated; the image part is the row's own
   (delta method, above) with its finite df, combined by Welch-Satterthwaite.
2. A common seed component. limma's genes are independent; the rows of one table are not: every
   Δ subtracts the same baseline seeds, and every variant of one seed shares that seed's data
   order. The part of S² the rows share (their mean pairwise covariance over seeds, c) is one
   draw with n-1 df however many rows there are, so it is split off before the prior is fitted
   (the rows' S² would otherwise agree more than independent draws do, d0 would come out far too
   large, and a baseline whose seeds happened to agree would make every row decisive).
   The seed variance is c + s̃²_row with Satterthwaite's df over (c, n-1) and (s̃², d + d0).
3. Robustness. Rows whose remaining variance is exactly zero (a variant identical to the baseline,
   a class no model predicts) carry no information on the prior and have no log: they are left
   out of the fit (limma offsets them instead, which drags d0 down). d0 is capped at the df of the
   rows it was fitted on (a prior cannot know more than its data), and no prior is fitted from
   fewer than three rows (d0 = 0: each row's own S²).
4. A row whose every seed gave the very same Δ with zero image influence (identical predictions)
   is exact: se 0, p 1 when Δ = 0, no MDE (NaN, not 0).

The p-value tests Δ = 0; one Holm correction runs across the table's trained variants (or, with
``report: {primary: [...]}``, across the primary variants, the rest forming a secondary family);
the verdict is better / worse when the Holm-adjusted p < 0.05, else "no detectable difference",
and the row gives the minimum detectable effect: the smallest |Δ| a two-sided t-test at Holm's
first-step level alpha/m (Bonferroni's; the conservative choice: later Holm steps are less strict)
detects with 80 % power, solved with the noncentral t (``Estimate.mde``).
``tests/report/test_stats_simulation.py`` proves the construction on simulated studies with a known truth,
calling the report's own path (``evidence.held_out_columns``, the verdict, ``effects.factorial_effects``), in four
regimes: every hard case in one table (identical rows, high agreement, unequal seed variances, small classes,
missing seeds), a table of same-architecture variants agreeing 85-95 %, seed variances 1x-6x with the baseline's at
6x, and classes of 5-10 test images; and it shows that the seed part, the image part and Holm each break a target
plainly when removed. ``benchmarks/stats_simulation.py`` prints the figures with more studies, the power at the
reported MDE, and every part removed in turn (benchmarks/RESULTS.md, "Are the held-out statistics right?"). Known
costs, measured there: in a table of mostly independent variants, rows that agree with the baseline on ~90 % of
predictions are shrunk toward the others' larger seed variance and over-cover (conservative), and rows whose seeds
spread 6x more than the rest under-cover slightly (0.936-0.953); with a baseline whose own seed variance dwarfs the
variants' (16x: 0.09, 36x: 0.19) and 3 seeds, the family-wise error exceeds 5 % (more baseline seeds are the remedy).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import special, stats

from fer_core.metrics import softmax  # one softmax for the core and the report (stats.softmax)

N_BOOT = 5000
ALPHA = 0.05
POWER = 0.80
DF_MAX = 1e6  # "known": a t with this many df is the normal


@dataclass(frozen=True)
class Estimate:
    """Held-out scores (or paired Δs) over seeds with their two variance parts. Fields are floats,
    or arrays of one shape when many estimates are made at once (classes, variants)."""

    mean: Any
    se_seeds: Any  # sqrt(seed variance / n): training randomness (moderated after ``moderate``)
    se_images: Any  # the shared held-out set's part (see the module docstring)
    df: Any  # Welch-Satterthwaite df of the total
    n: int  # seeds (pairs for a Δ)
    p_improve: Any = float("nan")  # Δ only: share of seed pairs with d > 0 (ties count half)
    sd: Any = float("nan")  # sd of the per-seed values (the row's own, unmoderated)
    df_images: Any = DF_MAX  # the image part's df (module docstring: images - 1 per class; Satterthwaite over classes)
    dev: Any = None  # per-seed deviations from the mean (n, ...): what ``moderate`` reads
    units: tuple | None = None  # the seeds, in the order of ``dev`` (pairs rows seed by seed in ``moderate``)
    exact: Any = False  # every seed the same value, no image influence: no variance at all
    d0: Any = 0.0  # prior df of the moderated seed variance (0: the row's own S²)
    s0: Any = float("nan")  # prior sd of the seed part (per seed, after the common part c)
    common: Any = 0.0  # the rows' common seed variance c (per seed), split off before moderation

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
        """Smallest |Δ| a two-sided t-test at level ``alpha`` detects with probability ``power``: the
        noncentrality delta / se solving P(|T| > t_crit) = power with T ~ noncentral t(df, delta / se);
        NaN where there is no variance (an exact row detects nothing and misses nothing: "n/a")."""
        se = np.asarray(self.se, dtype=float)
        df = np.broadcast_to(np.asarray(self.df, dtype=float), se.shape)
        ok = (se > 0) & (df > 0)
        out = np.full(se.shape, np.nan)
        if ok.any():
            out[ok] = noncentrality(df[ok], alpha, power) * se[ok]
        return out if out.shape else float(out)


def _power(nc: np.ndarray, df: np.ndarray, crit: np.ndarray) -> np.ndarray:
    """P(|T| > crit), T ~ noncentral t(df, nc); the normal where df is huge (scipy's nct loses precision
    there), and the lower tail (below the central t's for nc >= 0) read as 0 where scipy gives NaN."""
    big = df > 1e4
    small_df = np.where(big, 10.0, df)
    tail = stats.nct.sf(crit, small_df, nc) + np.nan_to_num(stats.nct.cdf(-crit, small_df, nc))
    return np.where(big, stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc), tail)


def noncentrality(df: Any, alpha: float = ALPHA, power: float = POWER) -> Any:
    """The noncentrality at which a two-sided t-test (``df``, level ``alpha``) has ``power``
    (elementwise; bisection on all rows at once, to 1e-6)."""
    d = np.minimum(np.atleast_1d(np.asarray(df, dtype=float)), DF_MAX)
    crit = stats.t.ppf(1 - alpha / 2, d)
    lo, hi = np.zeros_like(d), crit + 2 * stats.norm.ppf(power) + 10
    for _ in range(60):  # tiny df: the power curve rises slowly
        short = _power(hi, d, crit) < power
        if not short.any():
            break
        hi = np.where(short, 2 * hi, hi)
    while np.max(hi - lo) > 1e-6:
        mid = (lo + hi) / 2
        below = _power(mid, d, crit) < power
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out = (lo + hi) / 2
    return float(out[0]) if np.ndim(df) == 0 else out.reshape(np.shape(df))


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


def satterthwaite(parts: Sequence[Any], dfs: Sequence[Any]) -> Any:
    """Welch-Satterthwaite df of a sum of independent variance parts, each with its df (elementwise):
    (sum v)² / sum(v² / df); parts that are zero drop out; all zero: DF_MAX."""
    v = [np.asarray(p, dtype=float) for p in parts]
    with np.errstate(invalid="ignore", divide="ignore"):
        num = sum(v) ** 2
        den = sum(np.where(p > 0, p**2 / np.asarray(d, dtype=float), 0.0) for p, d in zip(v, dfs))
        return np.minimum(np.where(den > 0, num / np.where(den > 0, den, 1.0), DF_MAX), DF_MAX)


def estimate(values: np.ndarray, psi: np.ndarray, base_values: np.ndarray | None = None,
             base_psi: np.ndarray | None = None, *, seed_part: bool = True, image_part: bool = True,
             interaction: bool = True, df_images: Any = DF_MAX, units: Sequence[Any] | None = None) -> Estimate:
    """The mean over seeds (axis 0 of ``values``; ``psi`` has the images on axis 1) or, with a
    baseline paired seed by seed, the mean Δ, with both variance parts: the row's own S² (n-1 df;
    ``moderate`` borrows across rows) and the image part with ``df_images``. Trailing axes are
    estimated independently (classes, groups). ``seed_part`` / ``image_part`` switch a part off and
    ``interaction`` the seed x image correction of the image part; only the simulations do
    (tests/report/test_stats_simulation.py, benchmarks/stats_simulation.py), to show what each guards."""
    d = np.asarray(values, dtype=float)
    g = np.asarray(psi, dtype=float)
    if base_values is not None:
        d = d - np.asarray(base_values, dtype=float)
        g = g - np.asarray(base_psi, dtype=float)
    n, big_n = d.shape[0], g.shape[1]
    mean = d.mean(0) if n else np.full(d.shape[1:], np.nan)
    nan = np.full(np.shape(mean), np.nan)
    p_imp = ((d > 0).sum(0) + 0.5 * (d == 0).sum(0)) / n if n and base_values is not None else nan
    u = tuple(map(str, units)) if units is not None else None
    if n < 2:
        return Estimate(mean, nan, nan, nan, n, p_imp, nan, units=u)
    s2 = d.var(0, ddof=1)
    v_mean = (g.mean(0) ** 2).sum(0) / big_n**2
    v_bar = (g**2).sum(1).mean(0) / big_n**2
    var_e = np.maximum(v_bar - v_mean, 0.0) * n / (n - 1)  # seed x image interaction, from the images
    var_e = var_e if interaction else 0.0 * var_e
    v_seed = s2 / n if seed_part else np.zeros_like(s2)
    v_img = np.maximum(v_mean - var_e / n, 0.0) if image_part else 0.0 * v_mean
    exact = (s2 == 0) & (v_bar == 0)
    df_img = np.broadcast_to(np.asarray(df_images, dtype=float), np.shape(mean))
    df = satterthwaite([v_seed, v_img], [np.full(np.shape(mean), n - 1.0), df_img])
    return Estimate(mean, np.sqrt(v_seed), np.sqrt(v_img), df, n, p_imp, np.sqrt(s2), df_images=df_img,
                    dev=(d - mean) if seed_part else np.zeros_like(d), units=u, exact=exact)


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


def trigamma_inverse(x: np.ndarray) -> np.ndarray:
    """y with trigamma(y) = x (x > 0), Newton's iteration as in limma's ``trigammaInverse``."""
    x = np.asarray(x, dtype=float)
    y = np.where(x > 1e7, 1 / np.sqrt(np.maximum(x, 1e-300)), np.where(x < 1e-6, 1 / np.maximum(x, 1e-300),
                                                                         0.5 + 1 / np.maximum(x, 1e-300)))
    for _ in range(50):
        tri = special.polygamma(1, y)
        dif = tri * (1 - tri / x) / special.polygamma(2, y)
        y = y + dif
        if np.all(-dif / y < 1e-8):
            break
    return y


def fit_prior(s2: np.ndarray, d: np.ndarray, min_rows: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Smyth's (2004) moment estimator of the scaled inverse-chi² prior (s0², d0) of variances ``s2``
    (rows on axis 0; NaN = not in the fit) with ``d`` df each (limma ``fitFDist``); trailing axes fit
    separately. Fewer than ``min_rows`` rows: d0 = 0 (no prior). d0 is capped at the rows' total df."""
    s2 = np.asarray(s2, dtype=float)
    d = np.broadcast_to(np.asarray(d, dtype=float), s2.shape)
    ok = np.isfinite(s2) & (s2 > 0) & (d > 0)
    m = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        e = np.where(ok, np.log(np.where(ok, s2, 1.0)) - special.digamma(d / 2) + np.log(d / 2), np.nan)
        emean = np.nanmean(e, 0)
        evar = np.nansum((e - emean) ** 2, 0) / np.maximum(m - 1, 1) - np.nanmean(
            np.where(ok, special.polygamma(1, d / 2), np.nan), 0)
    cap = np.where(ok, d, 0.0).sum(0)
    d0 = np.where(evar > 0, 2 * trigamma_inverse(np.where(evar > 0, evar, 1.0)), np.inf)
    d0 = np.minimum(d0, cap)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        s02 = np.exp(emean + special.digamma(d0 / 2) - np.log(d0 / 2))
    d0 = np.where(m >= min_rows, d0, 0.0)
    return np.where(m >= min_rows, s02, np.nan), d0


def _common_variance(rows: list[Estimate]) -> tuple[np.ndarray, float]:
    """The rows' mean pairwise covariance over the seeds they share (per seed; elementwise for arrays),
    clipped to >= 0, and the df it rests on (shared seeds - 1)."""
    shape = np.shape(rows[0].mean)
    total, pairs, shared = np.zeros(shape), 0, []
    by_units: dict[tuple, list[np.ndarray]] = {}
    for r in rows:
        by_units.setdefault(r.units or tuple(map(str, range(r.n))), []).append(np.asarray(r.dev, dtype=float))
    if len(by_units) == 1:  # the usual case: every row on the same seeds; sum of pairwise covariances at once
        devs = next(iter(by_units.values()))
        x = np.stack(devs)  # (m, n, ...)
        m, n = x.shape[0], x.shape[1]
        if m < 2 or n < 2:
            return np.zeros(shape), 0.0
        s = x.sum(0)
        total = ((s**2).sum(0) - (x**2).sum((0, 1))) / (n - 1)
        return np.maximum(total / (m * (m - 1)), 0.0), n - 1.0
    flat = [(r.units or tuple(map(str, range(r.n))), np.asarray(r.dev, dtype=float)) for r in rows]
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            (ua, a), (ub, b) = flat[i], flat[j]
            common = [u for u in ua if u in set(ub)]
            if len(common) < 2:
                continue
            xa = a[[ua.index(u) for u in common]]
            xb = b[[ub.index(u) for u in common]]
            xa, xb = xa - xa.mean(0), xb - xb.mean(0)
            total = total + (xa * xb).sum(0) / (len(common) - 1)
            pairs += 1
            shared.append(len(common))
    if not pairs:
        return np.zeros(shape), 0.0
    return np.maximum(total / pairs, 0.0), float(np.median(shared)) - 1.0


def moderate(rows: list[Estimate], *, common: bool = True, prior: bool = True) -> list[Estimate]:
    """The rows of one family (one table's variants, or its Δs; elementwise for per-class arrays)
    with empirical-Bayes moderated seed variances (module docstring): the common seed component c
    split off (n-1 df), the rest shrunk toward a prior fitted across the rows (d + d0 df), the image
    part as it was; df by Welch-Satterthwaite over the three. ``common`` / ``prior`` switch a part
    off; only the simulation test does, to show what each guards. Rows with fewer than two seeds or
    no variance at all are returned as they are."""
    live = [i for i, r in enumerate(rows) if r.n >= 2 and r.dev is not None]
    if not live:
        return list(rows)
    est = [rows[i] for i in live]
    shape = np.shape(est[0].mean)
    exact = np.stack([np.broadcast_to(np.asarray(r.exact, dtype=bool), shape) for r in est])
    s2 = np.stack([np.asarray(r.sd, dtype=float) ** 2 for r in est])  # own S² per seed
    n = np.array([r.n for r in est], dtype=float).reshape((-1,) + (1,) * len(shape))
    d = n - 1
    if common and len(est) >= 2:
        c, df_c = _common_variance([r for r, x in zip(est, exact) if not np.all(x)] or est)
    else:
        c, df_c = np.zeros(shape), 0.0
    c = np.where(np.isfinite(c), c, 0.0)
    r2 = np.maximum(s2 - c, 0.0)  # the row's own part
    fit = np.where(exact | (r2 <= 0), np.nan, r2)
    s02, d0 = fit_prior(fit, np.broadcast_to(d, s2.shape)) if prior else (np.full(shape, np.nan), np.zeros(shape))
    with np.errstate(invalid="ignore"):
        post = np.where(d0 > 0, (np.where(np.isfinite(d0), d0, 0) * np.nan_to_num(s02) + d * r2) / (
            np.where(np.isfinite(d0), d0, 0) + d), r2)
        post = np.where(np.isinf(d0), np.broadcast_to(s02, post.shape), post)  # d0 infinite: the prior itself
    out = list(rows)
    for k, (i, r) in enumerate(zip(live, est)):
        seed_var = c + post[k]
        seed_var = np.where(exact[k], 0.0, seed_var)
        v_seed = seed_var / r.n
        df_seed = satterthwaite([c, post[k]], [np.full(shape, max(df_c, 1.0)), d[k] + d0])
        v_img = np.asarray(r.se_images, dtype=float) ** 2
        df = satterthwaite([v_seed, v_img], [df_seed, r.df_images])
        out[i] = replace(r, se_seeds=np.sqrt(v_seed), df=df, d0=d0, s0=np.sqrt(s02), common=c)
    return out


def unstack(est: Estimate) -> list[Estimate]:
    """An estimate made for many rows at once (leading axis of the mean; seeds lead ``dev``) as one
    estimate per row."""
    fields = ("mean", "se_seeds", "se_images", "df", "p_improve", "sd", "df_images", "exact")
    shape = np.shape(est.mean)
    arrays = {f: np.broadcast_to(np.asarray(getattr(est, f)), shape) for f in fields}
    dev = None if est.dev is None else np.asarray(est.dev)
    return [Estimate(n=est.n, units=est.units, dev=None if dev is None else dev[:, i],
                     **{f: arrays[f][i] for f in fields}) for i in range(shape[0])]


def restack(rows: list[Estimate]) -> Estimate:
    fields = ("mean", "se_seeds", "se_images", "df", "p_improve", "sd", "df_images", "exact", "d0", "s0", "common")
    return Estimate(n=rows[0].n, units=rows[0].units,
                    **{f: np.stack([np.broadcast_to(np.asarray(getattr(r, f)), np.shape(r.mean)) for r in rows])
                       for f in fields})


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
