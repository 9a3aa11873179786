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
counts in macro-F1, as every class does, but not in its group's F1 and Δ (a group is the mean
over its estimable classes; a group with none has no figures).

Families. The Δ of the study objective is the table's one tested family (Holm across the trained
variants; or, with ``report: {primary: [variant, ...]}``, Holm across those few and a second Holm
family across the rest). The per-class and per-group intervals are descriptive: unadjusted 95 %
intervals, one per cell, not tests (the report's headers say so).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fer_core.errors import FerError
from fer_core.report import stats

GROUPS = ("many", "medium", "few")
GROUP_LABELS = {"many": "many-shot", "medium": "medium-shot", "few": "few-shot"}


@dataclass(frozen=True)
class ReportSettings:
    many_above: int = 100  # many-shot: more training images than this
    few_below: int = 20  # few-shot: fewer training images than this
    min_support: int = 5  # a class with fewer held-out images is not estimable
    primary: tuple[str, ...] = ()  # pre-registered primary comparisons: their own Holm family

    @classmethod
    def from_spec(cls, spec: dict) -> ReportSettings:
        r = spec.get("report") or {}
        primary = tuple(str(v) for v in (r.get("primary") or ()))
        return cls(**{k: int(r[k]) for k in ("many_above", "few_below", "min_support") if k in r}, primary=primary)


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
                     settings: ReportSettings, holm_rows: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """variant -> held-out columns: the objective's mean and CI, Δ vs the baseline with CI, p, Holm p,
    MDE, seed pairs won, per-group and per-class F1 and Δ with CIs. Rows without stored held-out
    predictions get none of them; a row with predictions but no Δ says why (``no_heldout``).
    ``holm_rows``: the rows whose Δ tests form the Holm family (the rows that passed the adequacy check,
    fer_core/report/adequacy.py); None: every row with a Δ."""
    k = len(class_names)
    if labels is None:
        return {v.name: {} for v in variants}
    y = np.asarray(labels, dtype=np.int64)
    support = np.bincount(y, minlength=k)
    estimable = support >= settings.min_support
    # the image part's df. Per-class and group intervals: F1_c's image part is a sum over the images that
    # carry influence on it, those of class c and those predicted c (by either model of a pair), so its df is
    # their number - 1 (mean over seeds). The objective (its CI, and the test and MDE judged at Holm's level,
    # far in the tail): each class's own test images - 1, the conservative count (the other moved the
    # simulated family-wise error from 0.06 to 0.075; stats.py). Scores over many classes combine their
    # classes' parts (Satterthwaite); accuracy rests on all N images.
    df_test = np.maximum(support - 1, 1).astype(float)

    def df_cls(*preds: np.ndarray) -> np.ndarray:
        cls = np.arange(k)
        involved = (y[:, None] == cls)[None]
        for p in preds:
            involved = involved | (np.asarray(p)[..., None] == cls)
        return np.maximum(involved.sum(-2).mean(0) - 1, 1).astype(float)

    parts = {}
    for v in variants:
        if v.preds is None:
            continue
        obj, obj_psi = metric_parts(metric, y, v.preds, k, tail)
        f1, f1_psi = stats.f1_parts(y, v.preds, k)
        parts[v.name] = (v, obj, obj_psi, f1, f1_psi)
    obj_classes = (list(tail) if metric == "tail_f1" else [c for c in range(k) if support[c]]
                   if metric == "balanced_accuracy" else list(range(k)))
    # every row of the table first, so that the seed variances can be moderated across them
    means: dict[str, stats.Estimate] = {}
    deltas: dict[str, stats.Estimate] = {}
    cls_means: dict[str, stats.Estimate] = {}
    cls_deltas: dict[str, stats.Estimate] = {}
    grp_means: dict[str, stats.Estimate] = {}
    grp_deltas: dict[str, stats.Estimate] = {}
    why: dict[str, str] = {}
    gidx = [[c for c in groups[g] if estimable[c]] for g in GROUPS]  # groups of estimable classes only

    def grouped(f1: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vals = np.stack([f1[:, i].mean(-1) if i else np.full(len(f1), np.nan) for i in gidx], -1)
        gpsi = np.stack([psi[..., i].mean(-1) if i else np.zeros(psi.shape[:2]) for i in gidx], -1)
        return vals, gpsi

    def img_df(cls_est: stats.Estimate, idx: list[list[int]], dfc: np.ndarray | None = None) -> np.ndarray:
        v = np.asarray(cls_est.se_images, dtype=float) ** 2
        dfc = np.broadcast_to(np.asarray(cls_est.df_images if dfc is None else dfc, dtype=float), np.shape(v))
        return np.array([stats.satterthwaite([v[c] for c in i], [dfc[c] for c in i]) if i else stats.DF_MAX
                         for i in idx])

    def obj_df(cls_est: stats.Estimate) -> float:
        return float(len(y) - 1) if metric == "accuracy" else float(img_df(cls_est, [obj_classes], df_test)[0])

    for name, (v, obj, obj_psi, f1, f1_psi) in parts.items():
        cls_means[name] = stats.estimate(f1, f1_psi, df_images=df_cls(v.preds), units=v.units)
        means[name] = stats.estimate(obj, obj_psi, df_images=obj_df(cls_means[name]), units=v.units)
        grp_means[name] = stats.estimate(*grouped(f1, f1_psi), df_images=img_df(cls_means[name], gidx),
                                         units=v.units)
        if baseline is None or name == baseline:
            continue
        if baseline not in parts:
            why[name] = "the baseline has no stored held-out predictions: no paired Δ, no verdict"
            continue
        b = parts[baseline]
        common = [u for u in v.units if u in set(b[0].units)]
        if not common:
            why[name] = (f"no seed in common with the baseline (seeds {', '.join(v.units)} vs "
                         f"{', '.join(b[0].units)}): no paired Δ, no verdict")
            continue
        ia = [v.units.index(u) for u in common]
        ib = [b[0].units.index(u) for u in common]
        cd = stats.estimate(f1[ia], f1_psi[ia], b[3][ib], b[4][ib], df_images=df_cls(v.preds[ia], b[0].preds[ib]),
                            units=common)
        cls_deltas[name] = cd
        deltas[name] = stats.estimate(obj[ia], obj_psi[ia], b[1][ib], b[2][ib], df_images=obj_df(cd), units=common)
        if np.isnan(deltas[name].mean):
            why[name] = f"test {metric} is undefined (NaN) for this study's classes: no Δ, no verdict"
        ga, gpa = grouped(f1[ia], f1_psi[ia])
        gb, gpb = grouped(b[3][ib], b[4][ib])
        grp_deltas[name] = stats.estimate(ga, gpa, gb, gpb, df_images=img_df(cd, gidx), units=common)
    for family in (means, deltas, cls_means, cls_deltas, grp_means, grp_deltas):
        names = [n for n in family if family[n].n >= 2 and n not in why]
        for n, e in zip(names, stats.moderate([family[n] for n in names])):
            family[n] = e
    # the rows that passed the adequacy check (fer_core/report/adequacy.py); None: every row with a Δ
    tested = [n for n in deltas if deltas[n].n >= 2 and n not in why and (holm_rows is None or n in holm_rows)]
    unknown = [p for p in settings.primary if p not in {v.name for v in variants}]
    if unknown:
        raise FerError(f"report.primary: {unknown[0]!r} is not a variant of this study; variants: "
                       + ", ".join(v.name for v in variants if v.name != baseline))
    fams = {"primary": [n for n in tested if n in settings.primary],
            "secondary": [n for n in tested if n not in settings.primary]} if settings.primary else {"": tested}
    p_holm, family_of, mde = {}, {}, {}
    for fam, members in fams.items():
        p_holm.update(zip(members, stats.holm([float(deltas[n].p_value) for n in members])))
        family_of.update({n: (fam, len(members)) for n in members})
        if members:  # the first Holm step's level: what an MDE must clear (the conservative choice); all at once
            both = stats.restack([deltas[n] for n in members])
            mde.update(zip(members, np.atleast_1d(both.mde(alpha=stats.ALPHA / len(members))).tolist()))

    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        row: dict[str, Any] = {}
        if v.name not in parts:
            out[v.name] = row
            continue
        m = means[v.name]
        row.update(_est_cols("test_score", m))
        row["test_score_sd"] = float(m.sd)
        row["test_score_df"] = float(m.df)
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
        if v.name in why:
            row["no_heldout"] = why[v.name]
        if v.name in deltas and v.name not in why:
            d = deltas[v.name]
            fam, size = family_of.get(v.name, ("", 0))
            row.update(_est_cols("delta", d, delta=True))
            row.update({"delta_df": float(d.df), "n_paired": d.n, "n_units": len(v.units),
                        "n_units_baseline": len(parts[baseline][0].units), "p_value": float(d.p_value),
                        "p_holm": p_holm.get(v.name, float("nan")), "holm_family": fam, "holm_family_size": size,
                        "mde": mde.get(v.name, float("nan")), "p_improve": float(d.p_improve),
                        "delta_prior_df": float(d.d0), "delta_prior_sd": float(d.s0),
                        "delta_common_sd": float(np.sqrt(d.common))})
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
    """One verdict from one procedure: the Holm-adjusted held-out test of Δ (within the row's family)."""
    if "delta" not in row or row.get("delta") != row.get("delta"):
        why = row.get("no_heldout")  # why there is no Δ (k-fold, no common seed, NaN metric); NaN on other rows
        return why if isinstance(why, str) else "no held-out predictions stored: no verdict"
    n = int(row.get("n_paired") or 0)
    if n < 2:
        return f"too few paired seeds to tell from the baseline (n={n})"
    p, mde = row["p_holm"], row["mde"]
    fam, size = row.get("holm_family") or "", row.get("holm_family_size")
    tests = f"{int(size) if size == size and size else n_tests} {fam + ' ' if fam else ''}tests"
    better = (row["delta"] > 0) == maximize
    pi = row.get("p_improve")
    # the share of seed pairs the variant won, said as what it is (not a probability of being better)
    tail = f"; won {pi * n:g} of {n} seed pairs" if pi == pi else ""
    shared = max(int(row.get("n_units") or n), int(row.get("n_units_baseline") or n))
    if n < shared:
        tail += f"; Δ over the {n} seeds shared with the baseline"
    if p == p and p < stats.ALPHA:
        return f"{'better' if better else 'worse'} than the baseline (Holm p={p:.3g} of {tests}{tail})"
    mde_text = f"MDE {mde:.3f}" if mde == mde else "MDE n/a: no variance"
    return f"no detectable difference (Holm p={p:.2f} of {tests}; {mde_text}{tail})"
