"""Held-out evidence per variant: scores, Δs, per-class and per-group F1 with both variance parts.

Input: each complete unit's predicted classes on the held-out images (the test split, scored
at the epoch validation selected; or with k-fold CV the pooled out-of-fold predictions of one
(seed, repeat); user attr ``predictions_packed`` or, for older trials, the ``predictions.json``
artifact), grouped by variant and paired by unit (a seed, or a k-fold (seed, repeat)).
Output: one dict of numbers per variant, in the columns ``report.csv`` keeps. The statistics
and why they are built so: ``fer_core/report/stats.py``.

Class groups follow the long-tail convention (Liu et al., "Large-Scale Long-Tailed
Recognition in an Open World", CVPR 2019, Sec. 5: many-shot > 100, medium-shot 20-100,
few-shot < 20 training images); a study may move the thresholds (``report: {many_above,
few_below}``). A class with fewer than ``min_support`` held-out images (default 5) is "not
estimable": its F1 and Δ are left empty rather than shown as a confident number; it still
counts in macro-F1, as every class does.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fer_core.report import stats

GROUPS = ("many", "medium", "few")
GROUP_LABELS = {"many": "many-shot", "medium": "medium-shot", "few": "few-shot"}


@dataclass(frozen=True)
class ReportSettings:
    many_above: int = 100  # many-shot: more training images than this
    few_below: int = 20  # few-shot: fewer training images than this
    min_support: int = 5  # a class with fewer held-out images is not estimable

    @classmethod
    def from_spec(cls, spec: dict) -> ReportSettings:
        r = spec.get("report") or {}
        return cls(**{k: int(r[k]) for k in ("many_above", "few_below", "min_support") if k in r})


def shot_groups(train_counts: Sequence[int], settings: ReportSettings) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {g: [] for g in GROUPS}
    for c, n in enumerate(train_counts):
        out["many" if n > settings.many_above else "few" if n < settings.few_below else "medium"].append(c)
    return out


def metric_parts(metric: str, labels: np.ndarray, preds: np.ndarray, k: int,
                 tail: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The study's objective on held-out predictions (S, N): per-seed values (S,) and each image's
    influence (S, N) (see ``stats.f1_parts``)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.atleast_2d(preds)
    if metric == "accuracy":
        hit = (p == y).astype(float)
        acc = hit.mean(1)
        return acc, hit - acc[:, None]
    if metric == "balanced_accuracy":  # mean recall over the classes present: recall_c = TP_c / n_c
        present = [c for c in range(k) if (y == c).any()]
        vals = np.zeros(len(p))
        psi = np.zeros(p.shape)
        n = len(y)
        for c in present:
            yc = (y == c).astype(float)
            rec = ((p == c) * yc).sum(1) / yc.sum()
            vals += rec / len(present)
            psi += ((p == c) * yc - rec[:, None] * yc) * (n / yc.sum()) / len(present)
        return vals, psi
    f1, g = stats.f1_parts(y, p, k)
    if metric == "tail_f1":
        if not len(tail):
            return np.full(len(p), np.nan), np.zeros(p.shape)
        idx = list(tail)
        return f1[:, idx].mean(-1), g[..., idx].mean(-1)
    return f1.mean(-1), g.mean(-1)


@dataclass
class Variant:
    """One variant's complete trials: units (seeds) and their held-out predictions (S, N)."""

    name: str
    units: list[str]
    preds: np.ndarray | None  # None when some trial's held-out predictions are not stored


def _bounded_ci(e: stats.Estimate, delta: bool) -> tuple[np.ndarray, np.ndarray]:
    """The t-interval cut to the range a score (0..1) or a Δ of scores (-1..1) can take."""
    lo, hi = e.ci()
    return np.clip(lo, -1.0 if delta else 0.0, 1.0), np.clip(hi, -1.0 if delta else 0.0, 1.0)


def _est_cols(prefix: str, e: stats.Estimate, delta: bool = False) -> dict[str, float]:
    lo, hi = _bounded_ci(e, delta)
    return {prefix: float(e.mean), f"{prefix}_ci_lo": float(lo), f"{prefix}_ci_hi": float(hi),
            f"{prefix}_se_seeds": float(e.se_seeds), f"{prefix}_se_images": float(e.se_images)}


def held_out_columns(variants: list[Variant], labels: np.ndarray | None, baseline: str | None, metric: str,
                     class_names: Sequence[str], groups: dict[str, list[int]], tail: Sequence[int],
                     settings: ReportSettings, family: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """variant -> held-out columns: the objective's mean and CI, Δ vs the baseline with CI, p, Holm p,
    MDE, P(improvement), per-group and per-class F1 and Δ with CIs. Rows without stored held-out
    predictions get none of them. ``family``: the rows whose Δ tests form the Holm family (the rows
    that passed the adequacy check, fer_core/report/adequacy.py); None: every row with a Δ."""
    k = len(class_names)
    if labels is None:
        return {v.name: {} for v in variants}
    y = np.asarray(labels, dtype=np.int64)
    support = np.bincount(y, minlength=k)
    estimable = support >= settings.min_support
    parts = {}
    for v in variants:
        if v.preds is None:
            continue
        obj, obj_psi = metric_parts(metric, y, v.preds, k, tail)
        f1, f1_psi = stats.f1_parts(y, v.preds, k)
        parts[v.name] = (v, obj, obj_psi, f1, f1_psi)
    # every row of the table first, so that the df of each part can be pooled across them
    means: dict[str, stats.Estimate] = {}
    deltas: dict[str, stats.Estimate] = {}
    cls_means: dict[str, stats.Estimate] = {}
    cls_deltas: dict[str, stats.Estimate] = {}
    grp_means: dict[str, stats.Estimate] = {}
    grp_deltas: dict[str, stats.Estimate] = {}
    gidx = [groups[g] for g in GROUPS]

    def grouped(f1: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vals = np.stack([f1[:, i].mean(-1) if i else np.full(len(f1), np.nan) for i in gidx], -1)
        gpsi = np.stack([psi[..., i].mean(-1) if i else np.zeros(psi.shape[:2]) for i in gidx], -1)
        return vals, gpsi

    for name, (v, obj, obj_psi, f1, f1_psi) in parts.items():
        means[name] = stats.estimate(obj, obj_psi)
        cls_means[name] = stats.estimate(f1, f1_psi)
        grp_means[name] = stats.estimate(*grouped(f1, f1_psi))
        if baseline is None or name == baseline or baseline not in parts:
            continue
        b = parts[baseline]
        common = [u for u in v.units if u in set(b[0].units)]
        if not common:
            continue
        ia = [v.units.index(u) for u in common]
        ib = [b[0].units.index(u) for u in common]
        deltas[name] = stats.estimate(obj[ia], obj_psi[ia], b[1][ib], b[2][ib])
        cls_deltas[name] = stats.estimate(f1[ia], f1_psi[ia], b[3][ib], b[4][ib])
        ga, gpa = grouped(f1[ia], f1_psi[ia])
        gb, gpb = grouped(b[3][ib], b[4][ib])
        grp_deltas[name] = stats.estimate(ga, gpa, gb, gpb)
    for family in (means, deltas, cls_means, cls_deltas, grp_means, grp_deltas):
        names = [n for n in family if family[n].n >= 2]
        for n, e in zip(names, stats.pool_df([family[n] for n in names])):
            family[n] = e
    tested = [n for n in deltas if deltas[n].n >= 2 and (family is None or n in family)]
    p_holm = dict(zip(tested, stats.holm([float(deltas[n].p_value) for n in tested])))
    alpha_fw = stats.ALPHA / max(1, len(tested))  # the first Holm step: what an MDE must clear

    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        row: dict[str, Any] = {}
        if v.name not in parts:
            out[v.name] = row
            continue
        m = means[v.name]
        row.update(_est_cols("test_score", m))
        row["test_score_sd"] = float(m.sd)
        for gi, g in enumerate(GROUPS):
            e = grp_means[v.name]
            lo, hi = _bounded_ci(e, False)
            row[f"{g}_f1"], row[f"{g}_f1_ci_lo"], row[f"{g}_f1_ci_hi"] = (
                float(np.asarray(e.mean)[gi]), float(np.asarray(lo)[gi]), float(np.asarray(hi)[gi]))
        e = cls_means[v.name]
        lo, hi = _bounded_ci(e, False)
        for c, cname in enumerate(class_names):
            col = class_column(c, cname)
            ok = bool(estimable[c])
            row[col] = float(np.asarray(e.mean)[c]) if ok else float("nan")
            row[f"{col}_ci_lo"] = float(np.asarray(lo)[c]) if ok else float("nan")
            row[f"{col}_ci_hi"] = float(np.asarray(hi)[c]) if ok else float("nan")
        if v.name in deltas:
            d = deltas[v.name]
            row.update(_est_cols("delta", d, delta=True))
            row.update({"delta_df": float(d.df), "n_paired": d.n, "p_value": float(d.p_value),
                        "p_holm": p_holm.get(v.name, float("nan")),
                        "mde": float(d.mde(alpha=alpha_fw)), "p_improve": float(d.p_improve)})
            e = grp_deltas[v.name]
            lo, hi = _bounded_ci(e, True)
            for gi, g in enumerate(GROUPS):
                row[f"{g}_delta"], row[f"{g}_delta_ci_lo"], row[f"{g}_delta_ci_hi"] = (
                    float(np.asarray(e.mean)[gi]), float(np.asarray(lo)[gi]), float(np.asarray(hi)[gi]))
            e = cls_deltas[v.name]
            lo, hi = _bounded_ci(e, True)
            for c, cname in enumerate(class_names):
                col = "delta_" + class_column(c, cname)
                ok = bool(estimable[c])
                row[col] = float(np.asarray(e.mean)[c]) if ok else float("nan")
                row[f"{col}_ci_lo"] = float(np.asarray(lo)[c]) if ok else float("nan")
                row[f"{col}_ci_hi"] = float(np.asarray(hi)[c]) if ok else float("nan")
        out[v.name] = row
    return out


def class_column(c: int, name: str) -> str:
    return f"f1_{c:02d}_{name.replace(' ', '_')}"


def verdict(row: dict[str, Any], maximize: bool, n_tests: int) -> str:
    """One verdict from one procedure: the Holm-adjusted held-out test of Δ."""
    if "delta" not in row or row.get("delta") != row.get("delta"):
        why = row.get("no_heldout")  # a k-fold config without a complete (seed, repeat); NaN on other rows
        return why if isinstance(why, str) else "no held-out predictions stored: no verdict"
    n = int(row.get("n_paired") or 0)
    if n < 2:
        return f"too few paired seeds to tell from the baseline (n={n})"
    p, mde = row["p_holm"], row["mde"]
    better = (row["delta"] > 0) == maximize
    pi = row.get("p_improve")
    tail = f"; P(better) {pi:.2f}" if pi == pi else ""
    if p == p and p < stats.ALPHA:
        return f"{'better' if better else 'worse'} than the baseline (Holm p={p:.3g} of {n_tests} tests{tail})"
    return f"no detectable difference (Holm p={p:.2f} of {n_tests} tests; MDE {mde:.3f}{tail})"
