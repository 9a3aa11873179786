"""Factorial effects of a two-level grid (full or fractional): main effects and two-way interactions.

For a grid whose factors all have two levels (coded -1 for the first, +1 for the second), an
effect is the change of the mean held-out score from the -1 to the +1 level of its contrast (Box,
Hunter & Hunter, "Statistics for Experimenters", 2nd ed., ch. 5-6): for a main effect the
contrast is the factor's code, for the interaction A x B the product of both codes. It is
estimated by least squares on the model matrix of the runs actually present (intercept, main
effects, two-way interactions; effect = 2 x coefficient), which on a complete or orthogonal design
is exactly mean(+) - mean(-), and on an incomplete one is the unbiased estimate where one exists.
Each effect is a fixed linear combination of the runs' scores, so it is estimated exactly like a
Δ in the ablation table (``fer_core/report/stats.py``): per seed, the combination of the runs'
held-out scores (the seed part), and per image the same combination of the runs' influences
(the image part: every run is scored on the same held-out images); moderated seed variances
across the effects, Holm across them.

What the runs present cannot answer is said, never estimated from a silently incomplete grid:

- runs missing (no trial, or no stored held-out predictions on the common seeds) are listed;
- two effects whose contrast columns are equal (or opposite) over the runs cannot be told apart
  and are reported once, named together (full aliasing, as in a resolution III/IV fraction);
- the model matrix's rank decides what is estimable: an effect outside its row space is "not
  estimable"; when missing runs leave the interactions unestimable but the main effects
  estimable in the additive model, the main effects are estimated there and marked "assumes no
  interactions";
- an estimable effect whose contrast is correlated with another over the runs present is
  "partially aliased" with it (named, with the correlation): its estimate is adjusted for the
  other by least squares, its interval wider than in the complete grid.
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


def expected_runs(spec: Mapping[str, Any], factors: Mapping[str, list]) -> list[tuple[int, ...]]:
    """The design's runs as code tuples (factor order): the full grid, or the fraction whose generated
    factors are the products of their generator's codes (``design.fraction``)."""
    names = list(factors)
    fraction = (spec.get("design") or {}).get("fraction") or {}
    free = [f for f in names if f not in fraction]
    out = []
    for combo in itertools.product((-1, 1), repeat=len(free)):
        codes = dict(zip(free, combo))
        for gen, word in fraction.items():
            codes[gen] = int(np.prod([codes[w] for w in word]))
        out.append(tuple(codes[f] for f in names))
    return out


def _run_name(codes: Sequence[int], factors: Mapping[str, list]) -> str:
    return ",".join(f"{f}={factors[f][0 if c < 0 else 1]}" for f, c in zip(factors, codes))


def _estimable(x: np.ndarray) -> np.ndarray:
    """Which coefficients of the model matrix ``x`` (R, p) are estimable: e_j in its row space."""
    proj = np.linalg.pinv(x) @ x
    return np.all(np.abs(proj - np.eye(x.shape[1])) < 1e-8, axis=0)


def factorial_effects(spec: Mapping[str, Any], variants: Sequence[Variant], labels: np.ndarray | None,
                      metric: str, num_classes: int, tail: Sequence[int] = ()) -> pd.DataFrame | None:
    """One row per main effect and two-way interaction: estimate, 95 % CI, both SE parts, p, Holm p,
    the effects it is aliased with and a note (not estimable, assumes no interactions, partially
    aliased); ``attrs["missing_runs"]`` lists the design's runs without held-out predictions on the
    common seeds. None when the study is not a two-level grid with held-out predictions of at least
    two runs on common seeds."""
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
    names = list(factors)
    present = {tuple(c[f] for f in names) for _, c in runs}
    missing = [_run_name(r, factors) for r in expected_runs(spec, factors) if r not in present]
    y = np.asarray(labels, dtype=np.int64)
    vals, psis = [], []
    for v, _ in runs:
        idx = [v.units.index(u) for u in units]
        val, psi = metric_parts(metric, y, v.preds[idx], num_classes, tail)
        vals.append(val)
        psis.append(psi)
    score, influence = np.stack(vals), np.stack(psis)  # (R, S), (R, S, N)
    effects = [(a,) for a in names] + list(itertools.combinations(names, 2))
    contrast = np.array([[np.prod([c[f] for f in e]) for e in effects] for _, c in runs], dtype=float)  # (R, E)
    why_missing = f"runs missing: {'; '.join(missing)}" if missing else "runs present"

    rows, seen, kept = [], {}, []  # kept: (row index, contrast column) of the distinct, non-constant contrasts
    for j, e in enumerate(effects):
        col = contrast[:, j]
        label = " x ".join(e)
        if np.all(col == col[0]):
            rows.append({"effect": label, "aliased_with": "the mean (constant over the runs): not estimable",
                         "note": f"not estimable ({why_missing})" if missing else "not estimable"})
            continue
        key = tuple(col * col[np.flatnonzero(col)[0]])  # sign-free: opposite columns are aliases too
        if key in seen:
            rows[seen[key]]["aliased_with"] = ", ".join(filter(None, [rows[seen[key]].get("aliased_with"), label]))
            continue
        seen[key] = len(rows)
        kept.append((len(rows), col, len(e)))
        rows.append({"effect": label, "aliased_with": "", "note": "",
                     "levels": " x ".join(f"{factors[f][0]}→{factors[f][1]}" for f in e)})
    if not kept:
        return None
    x = np.column_stack([np.ones(len(runs))] + [c for _, c, _ in kept])
    ok = _estimable(x)[1:]
    weights: dict[int, np.ndarray] = {}
    pinv = np.linalg.pinv(x)
    for (ri, _, _), good, w in zip(kept, ok, pinv[1:]):
        if good:
            weights[ri] = 2 * w  # effect = 2 x coefficient (the -1 -> +1 change)
        else:
            rows[ri]["note"] = f"not estimable ({why_missing})"
    mains = [(ri, c) for ri, c, order in kept if order == 1 and ri not in weights]
    if mains and len(kept) > len([k for k in kept if k[2] == 1]):
        # interactions make the main effects unestimable: the additive model may still answer, said so
        xm = np.column_stack([np.ones(len(runs))] + [c for _, c, order in kept if order == 1])
        okm, pm = _estimable(xm)[1:], np.linalg.pinv(xm)[1:]
        for (ri, _, _), good, w in zip([k for k in kept if k[2] == 1], okm, pm):
            if good and ri not in weights:
                weights[ri] = 2 * w
                rows[ri]["note"] = f"assumes no interactions ({why_missing})"
    # partial aliasing: an estimated effect's contrast correlated with another kept one over these runs
    cols = {ri: c for ri, c, _ in kept}
    for ri in weights:
        partners = []
        for rj, cj in cols.items():
            if rj == ri:
                continue
            r = np.corrcoef(cols[ri], cj)[0, 1]
            if abs(r) > 1e-9 and r == r:
                partners.append(f"{rows[rj]['effect']} (r={r:+.2f})")
        if partners:
            rows[ri]["note"] = "; ".join(filter(None, [rows[ri]["note"], "partially aliased with " + ", ".join(partners)]))
    est_rows = [rows[ri] for ri in sorted(weights)]
    if not est_rows:
        out = pd.DataFrame(rows, columns=COLUMNS)
        out.attrs["missing_runs"] = missing
        return out
    w = np.stack([weights[ri] for ri in sorted(weights)], axis=-1)  # (R, E')
    values = np.einsum("rs,re->se", score, w)
    psi = np.einsum("rsn,re->sne", influence, w)
    est = stats.moderate(stats.unstack(stats.estimate(values, psi, units=units)))  # one estimate per effect
    p_holm = stats.holm([float(e.p_value) for e in est])
    for r, e, ph in zip(est_rows, est, p_holm):
        lo, hi = e.ci()
        r.update({"estimate": float(e.mean), "ci_lo": float(lo), "ci_hi": float(hi), "se_seeds": float(e.se_seeds),
                  "se_images": float(e.se_images), "df": float(e.df), "n_seeds": e.n, "p_value": float(e.p_value),
                  "p_holm": float(ph)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["missing_runs"] = missing
    return out


COLUMNS = ["effect", "levels", "estimate", "ci_lo", "ci_hi", "se_seeds", "se_images", "df", "n_seeds", "p_value",
           "p_holm", "aliased_with", "note"]


def effects_markdown(df: pd.DataFrame, metric: str) -> str:
    show = pd.DataFrame({
        "effect": df["effect"],
        "levels (- → +)": df["levels"].fillna(""),
        f"Δ test {metric} [95% CI]": [
            "–" if v != v else f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            for v, lo, hi in zip(df["estimate"], df["ci_lo"], df["ci_hi"])],
        "p (Holm)": ["–" if p != p else f"{p:.3g}" for p in df["p_holm"]],
        "aliased with": df["aliased_with"].fillna(""),
        "note": df["note"].fillna("") if "note" in df else "",
    })
    return show.to_markdown(index=False)
