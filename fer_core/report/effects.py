"""Factorial effects of a two-level grid (full or fractional): main effects and two-way interactions.

For a grid whose factors all have two levels (coded -1 for the first, +1 for the second), an
effect is the mean held-out score of the runs where its contrast is +1 minus the mean where it
is -1 (Box, Hunter & Hunter, "Statistics for Experimenters", 2nd ed., ch. 5-6): for a main
effect the contrast is the factor's code, for the interaction A x B the product of both codes.
Each effect is a fixed linear combination of the runs' scores, so it is estimated exactly like
a Δ in the ablation table (``fer_core/report/stats.py``): per seed, the combination of the runs'
held-out scores (the seed part), and per image the same combination of the runs' influences
(the image part: every run is scored on the same held-out images); Satterthwaite's df pooled
over the effects, Holm across them.

Aliasing is read off the runs actually present: two effects whose contrast columns are equal (or
opposite) over the runs cannot be told apart and are reported once, named together; an effect
whose contrast is constant is not estimable. In a resolution V fraction (``design.fraction``
with a generator word of four factors) no main effect or two-way interaction is aliased with
another; in a resolution IV fraction the two-way interactions come in aliased pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fer_core.report import stats
from fer_core.report.evidence import Variant, metric_parts


def two_level_factors(spec: Mapping[str, Any]) -> dict[str, list] | None:
    """The grid's factors when every one has exactly two levels (else None: no factorial effects)."""
    design = spec.get("design") or {}
    factors = design.get("factors") or {}
    if design.get("kind") != "grid" or not factors or any(len(v) != 2 for v in factors.values()):
        return None
    return {str(k): list(v) for k, v in factors.items()}


def run_codes(variant: str, factors: Mapping[str, list]) -> dict[str, int] | None:
    """A grid variant's name ("loss=ce,sampler=sqrt") as ±1 codes per factor; None if it is not one."""
    parts = dict(p.split("=", 1) for p in variant.split(",") if "=" in p)
    codes = {}
    for k, levels in factors.items():
        if k not in parts or parts[k] not in (str(levels[0]), str(levels[1])):
            return None
        codes[k] = -1 if parts[k] == str(levels[0]) else 1
    return codes


def factorial_effects(spec: Mapping[str, Any], variants: Sequence[Variant], labels: np.ndarray | None,
                      metric: str, num_classes: int, tail: Sequence[int] = ()) -> pd.DataFrame | None:
    """One row per main effect and two-way interaction: estimate, 95 % CI, both SE parts, p, Holm p,
    and the effects it is aliased with; None when the study is not a two-level grid with held-out
    predictions of at least two runs on common seeds."""
    factors = two_level_factors(spec)
    if factors is None or labels is None:
        return None
    runs = [(v, run_codes(v.name, factors)) for v in variants if v.preds is not None]
    runs = [(v, c) for v, c in runs if c is not None]
    if len(runs) < 2:
        return None
    units = sorted(set.intersection(*(set(v.units) for v, _ in runs)), key=str)
    if len(units) < 2:
        return None
    y = np.asarray(labels, dtype=np.int64)
    vals, psis = [], []
    for v, _ in runs:
        idx = [v.units.index(u) for u in units]
        val, psi = metric_parts(metric, y, v.preds[idx], num_classes, tail)
        vals.append(val)
        psis.append(psi)
    score, influence = np.stack(vals), np.stack(psis)  # (R, S), (R, S, N)
    names = list(factors)
    effects = [(a,) for a in names] + list(itertools.combinations(names, 2))
    contrast = np.array([[np.prod([c[f] for f in e]) for e in effects] for _, c in runs], dtype=float)  # (R, E)

    rows, seen = [], {}
    for j, e in enumerate(effects):
        col = contrast[:, j]
        label = " x ".join(e)
        if np.all(col == col[0]):
            rows.append({"effect": label, "aliased_with": "the mean (constant over the runs): not estimable"})
            continue
        key = tuple(col * col[np.flatnonzero(col)[0]])  # sign-free: opposite columns are aliases too
        if key in seen:
            rows[seen[key]]["aliased_with"] = ", ".join(filter(None, [rows[seen[key]].get("aliased_with"), label]))
            continue
        seen[key] = len(rows)
        plus, minus = col > 0, col < 0
        w = np.where(plus, 1.0 / plus.sum(), 0.0) - np.where(minus, 1.0 / minus.sum(), 0.0)  # mean(+) - mean(-)
        rows.append({"effect": label, "aliased_with": "", "_w": w,
                     "levels": " x ".join(f"{factors[f][0]}→{factors[f][1]}" for f in e)})
    est_rows = [r for r in rows if "_w" in r]
    if not est_rows:
        return None
    w = np.stack([r.pop("_w") for r in est_rows], axis=-1)  # (R, E')
    values = np.einsum("rs,re->se", score, w)
    psi = np.einsum("rsn,re->sne", influence, w)
    est = stats.moderate(stats.unstack(stats.estimate(values, psi)))  # one estimate per effect
    p_holm = stats.holm([float(e.p_value) for e in est])
    for r, e, ph in zip(est_rows, est, p_holm):
        lo, hi = e.ci()
        r.update({"estimate": float(e.mean), "ci_lo": float(lo), "ci_hi": float(hi), "se_seeds": float(e.se_seeds),
                  "se_images": float(e.se_images), "df": float(e.df), "n_seeds": e.n, "p_value": float(e.p_value),
                  "p_holm": float(ph)})
    return pd.DataFrame(rows, columns=["effect", "levels", "estimate", "ci_lo", "ci_hi", "se_seeds", "se_images",
                                       "df", "n_seeds", "p_value", "p_holm", "aliased_with"])


def effects_markdown(df: pd.DataFrame, metric: str) -> str:
    show = pd.DataFrame({
        "effect": df["effect"],
        "levels (- → +)": df["levels"].fillna(""),
        f"Δ test {metric} [95% CI]": [
            "–" if v != v else f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            for v, lo, hi in zip(df["estimate"], df["ci_lo"], df["ci_hi"])],
        "p (Holm)": ["–" if p != p else f"{p:.3g}" for p in df["p_holm"]],
        "aliased with": df["aliased_with"].fillna(""),
    })
    return show.to_markdown(index=False)
