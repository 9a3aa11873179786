"""Do the ablation table's intervals and verdicts reproduce? Two runs of one study, disjoint seeds.

    python benchmarks/evidence_reproducibility.py --storage sqlite:///digits.db \
        --first imbalance-ablation-digits --second imbalance-ablation-digits-rerun

Prints both held-out tables (Δ test macro-F1 with 95 % CI, Holm p, verdict, Δ per class group),
then the reproducibility figures the evidence issue asks for:

- the share of the second run's Δs that fall inside the first run's 95 % intervals (target
  >= 90 %; each interval is a statement about the expected Δ, so the second run's *estimate*
  lands inside it less often than 95 % even when both are right: the figure printed beside it is
  what two correct intervals would give, 2 Phi(1.96 / sqrt(1 + (se2/se1)^2)) - 1 per row),
- decisive verdicts (better / worse) that flip between the runs (target: none; a verdict that
  turns into "no detectable difference" is not a flip),
- the two findings of the long-tail literature the table should reproduce: balanced softmax
  beats CE on few-shot F1 (Ren et al., NeurIPS 2020, Table 2: CIFAR-10-LT ratio 100), and
  re-weighting on top of a re-balancing sampler costs the many-shot classes (Cui et al., CVPR 2019
  discuss over-weighting; Kang et al., ICLR 2020, Sec. 4: re-balancing trades head for tail).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
from scipy import stats as sps

from fer_core.report.export import load

COLS = ["variant", "n_seeds", "test_score", "test_score_ci_lo", "test_score_ci_hi", "delta", "delta_ci_lo",
        "delta_ci_hi", "p_holm", "mde", "few_delta", "few_delta_ci_lo", "few_delta_ci_hi", "many_delta",
        "many_delta_ci_lo", "many_delta_ci_hi", "verdict"]


def table(name: str, storage: str) -> pd.DataFrame:
    _, _, t = load(name, storage)
    return t[t["derived"] == ""].set_index("variant")


def ci(r: pd.Series, col: str) -> str:
    v = r.get(col)
    if v is None or v != v:
        return "–"
    return f"{v:+.3f} [{r[col + '_ci_lo']:+.3f}, {r[col + '_ci_hi']:+.3f}]"


def show(t: pd.DataFrame, title: str) -> None:
    print(f"\n### {title}\n")
    rows = []
    for v, r in t.iterrows():
        rows.append({"variant": v, "n": int(r["n_seeds"]),
                     "test macro-F1": f"{r['test_score']:.3f} [{r['test_score_ci_lo']:.3f}, {r['test_score_ci_hi']:.3f}]",
                     "Δ [95% CI]": ci(r, "delta"), "p (Holm)": "" if r["baseline"] else f"{r['p_holm']:.3g}",
                     "MDE": "" if r["baseline"] else f"{r['mde']:.3f}", "Δ few-shot": ci(r, "few_delta"),
                     "Δ many-shot": ci(r, "many_delta"), "verdict": r["verdict"].split(" (")[0]})
    print(pd.DataFrame(rows).to_markdown(index=False))


def decisive(verdict: str) -> str | None:
    for word in ("better", "worse"):
        if verdict.startswith(word):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", required=True)
    ap.add_argument("--first", default="imbalance-ablation-digits")
    ap.add_argument("--second", default="imbalance-ablation-digits-rerun")
    args = ap.parse_args(argv)
    a, b = table(args.first, args.storage), table(args.second, args.storage)
    show(a, f"{args.first} (seeds {a.iloc[0]['seeds']})")
    show(b, f"{args.second} (seeds {b.iloc[0]['seeds']})")
    rows = [v for v in a.index if v in b.index and not a.loc[v, "baseline"]]
    inside, expected, flips = [], [], []
    for v in rows:
        lo, hi = a.loc[v, "delta_ci_lo"], a.loc[v, "delta_ci_hi"]
        inside.append(bool(lo <= b.loc[v, "delta"] <= hi))
        se1 = (hi - lo) / (2 * sps.t.ppf(0.975, max(1.0, a.loc[v, "delta_df"]))) if hi > lo else 0.0
        se2 = (b.loc[v, "delta_ci_hi"] - b.loc[v, "delta_ci_lo"]) / (
            2 * sps.t.ppf(0.975, max(1.0, b.loc[v, "delta_df"])))
        expected.append(2 * sps.norm.cdf(1.96 / np.sqrt(1 + (se2 / se1) ** 2)) - 1 if se1 > 0 else float("nan"))
        da, db = decisive(a.loc[v, "verdict"]), decisive(b.loc[v, "verdict"])
        if da and db and da != db:
            flips.append(f"{v}: {da} -> {db}")
    print(f"\nsecond run's Δ inside the first run's 95 % CI: {sum(inside)}/{len(inside)} = "
          f"{np.mean(inside):.0%} (two correct intervals would give about {np.nanmean(expected):.0%})")
    dec_a = {v: decisive(a.loc[v, "verdict"]) for v in rows}
    dec_b = {v: decisive(b.loc[v, "verdict"]) for v in rows}
    print(f"decisive verdicts: first run {sum(map(bool, dec_a.values()))}, second {sum(map(bool, dec_b.values()))}, "
          f"agreeing {sum(1 for v in rows if dec_a[v] and dec_a[v] == dec_b[v])}; flipped: {flips or 'none'}")
    for t, name in ((a, args.first), (b, args.second)):
        bs = t.loc["balanced_softmax"] if "balanced_softmax" in t.index else None
        combo = t.loc["sampler+weighted_ce"] if "sampler+weighted_ce" in t.index else None
        if bs is not None:
            print(f"{name}: balanced softmax vs CE, Δ few-shot F1 {ci(bs, 'few_delta')}")
        if combo is not None:
            print(f"{name}: weighted sampler + weighted CE vs CE, Δ many-shot F1 {ci(combo, 'many_delta')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
