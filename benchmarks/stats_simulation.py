"""The held-out statistics' operating characteristics on simulated studies with a known truth, and what
each guarded part of them protects.

The generator is the simulation test's (tests/report/test_stats_simulation.py: 18 variants of one
baseline on a held-out set of 300 images in 6 classes), in each of its regimes (``--regime``):

- mixed: every hard case in one table: two rows identical to the baseline, four high-agreement rows (~90 %
  of predictions the baseline's), four rows with 6x the baseline's seed variance, three rows missing a
  seed, five plain rows; classes of 9 and 6 test images;
- agreeing: every row a same-architecture variant, 85 / 90 / 95 % of predictions the baseline's;
- unequal: seed variances 1x to 6x across the rows, the baseline's at 6x (the part every Δ shares dominates);
- small classes: classes of 10, 7 and 5 test images at seeds that barely move the models.

Everything runs through the report's own path: ``evidence.held_out_columns`` and ``evidence.verdict``.

Figures, per regime and number of seeds (3, 5, 10):

- FWER: the share of null studies (every variant's class biases the baseline's) with any decisive
  verdict among the 18 rows (target <= 5 %);
- coverage: the share of 95 % intervals of Δ macro-F1 (and of every class's Δ F1) that hold the true Δ,
  on studies with planted effects (target 93-97 %), overall, per kind of row, for the worst class and for
  the classes of fewer than 10 test images;
- power at the reported MDE: every row but the identical ones gets a true Δ macro-F1 (the biggest
  class's bias lowered, solved by bisection on the closed-form truth) of the size its kind of row
  reports as its MDE when it carries that effect, and power is the share of rows whose raw p clears
  alpha / 18, the level the MDE is solved at (Holm's first step; target 80 % +- 3 %). "The size it
  reports" is the root mean square of the kind's reported MDEs: a reported MDE is nc * se-hat, nc from
  the noncentral t, and se-hat² is unbiased for the true se², so the RMS estimates the MDE at the true
  se, the size the noncentral t promises 80 % at (a median would not: with 2 df the median se-hat is
  0.83 of the true se). It is a fixed point, since a row's MDE depends on the effect it carries (a
  shifted class bias changes more predictions, which widens the image part): two steps from the null's
  MDEs, on a quarter of the studies each; how far the last run's RMS MDE still is from the planted size
  is printed beside it.

``--ablate`` repeats the figures with one guarded part removed (patched out of fer_core.report.stats
for the run): the seed part, the image part, the seed x image correction, the finite image df, the
common seed component, the moderation prior, Holm, and the noncentral t of the MDE. Each should fail
one target plainly, or (the prior) cost power without breaking a target.

    python benchmarks/stats_simulation.py --regime mixed       # the method's table, ~10 min a core
    python benchmarks/stats_simulation.py --studies 200        # every regime, ~30 min a core
    python benchmarks/stats_simulation.py --ablate --seeds 3   # what each part guards
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "report"))
import test_stats_simulation as sim  # the test's generator: one definition of the regimes

from fer_core.report import stats

# the planted effect: lower the biggest class's bias (Δ macro-F1 falls monotonically with the scale); in the
# unequal regime the MDE at 3 seeds (~0.17) is more than one class can lose, so there the two biggest classes'
DIRECTION = -np.eye(sim.K)[0]
DIRECTIONS = {"unequal": -(np.eye(sim.K)[0] + np.eye(sim.K)[1])}


def direction(regime: sim.Regime) -> np.ndarray:
    return DIRECTIONS.get(regime.name, DIRECTION)


class Unreachable(ValueError):
    """The MDE to plant is larger than any Δ macro-F1 a class-bias shift reaches: no power figure."""


def judged(regime: sim.Regime) -> list[str]:
    """The regime's kinds of row that get a verdict worth judging (identical rows are exact)."""
    return sorted(set(regime.kinds) - {"same"}, key=regime.kinds.index)


def scale_for(target: float, kind: str, base: np.ndarray, regime: sim.Regime) -> float:
    """The scale s at which the row's true Δ macro-F1 (class biases s * the direction) is -target; NaN where no
    scale reaches it (a Δ macro-F1 is bounded: lowering one class's bias can cost at most that class's F1)."""

    def delta(s: float) -> float:
        return float((sim.true_f1(s * direction(regime), kind, regime) - base).mean())

    lo, hi = 0.0, 1.0
    while delta(hi) > -target:
        if hi > 64:  # the biggest class predicted never: nothing further to lose
            return float("nan")
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta(mid) > -target else (lo, mid)
    return (lo + hi) / 2


def planted(n_seeds: int, studies: int, targets: dict[str, float] | None, regime: sim.Regime,
            rng: np.random.Generator) -> tuple[dict[str, float], dict[str, float]]:
    """Studies with every judged row's true Δ macro-F1 at its kind's target (None: no effect anywhere):
    per kind, the share of rows whose raw p clears alpha / 18, and the RMS of the MDEs they report."""
    rows_k = list(regime.kinds)
    kinds = ["plain", *rows_k]
    base = sim.truths(regime)[-1, "base"]
    scales = {k: scale_for(t, k, base, regime) for k, t in (targets or {}).items()}
    bad = [k for k, v in scales.items() if v != v]
    if bad:
        raise Unreachable(f"no shift reaches the MDE of {bad[0]} rows ({targets[bad[0]]:.3f})")
    mus = [np.zeros(sim.K)] + [scales[k] * direction(regime) if k in scales else np.zeros(sim.K) for k in rows_k]
    level = stats.ALPHA / sim.N_VARIANTS
    hits: dict[str, list[bool]] = {k: [] for k in judged(regime)}
    mdes: dict[str, list[float]] = {k: [] for k in judged(regime)}
    for _ in range(studies):
        rows = sim.study_rows(sim.simulate(rng, n_seeds, mus, kinds, regime), kinds, regime=regime)
        for i, kind in enumerate(rows_k):
            if kind in hits:
                hits[kind].append(rows[f"v{i + 1:02d}"]["p_value"] < level)
                mdes[kind].append(rows[f"v{i + 1:02d}"]["mde"])
    power = {k: float(np.mean(v)) for k, v in hits.items()}
    power["all"] = float(np.mean([x for v in hits.values() for x in v]))
    return power, {k: float(np.sqrt(np.nanmean(np.square(v)))) for k, v in mdes.items()}  # RMS: the docstring


def figures(n_seeds: int, studies: int, seed: int, regime: sim.Regime, power: bool = True) -> dict:
    null = sim.run(n_seeds, studies, planted=False, seed=seed, regime=regime)
    cover = sim.run(n_seeds, studies, planted=True, seed=seed + 1, regime=regime)
    out = {"fwer": null["fwer"], "coverage": cover["coverage"],
           "kinds": {k: cover[f"coverage_{k}"] for k in judged(regime)},
           "class_coverage": cover["class_coverage"], "worst_class": cover["worst_class_coverage"],
           "small_class": cover["small_class_coverage"]}
    if not power:
        return out
    rng = np.random.default_rng(seed + 2)
    # the MDE a row reports depends on the effect it carries (a shifted class bias changes more predictions,
    # which widens the image part), so the size to plant is a fixed point: the RMS of the MDEs reported by
    # rows that carry an effect of that size; two steps from the null's MDEs (the drift left is printed)
    _, targets = planted(n_seeds, max(studies // 4, 50), None, regime, rng)
    try:
        for _ in range(2):
            _, targets = planted(n_seeds, max(studies // 4, 50), targets, regime, rng)
        pw, reported = planted(n_seeds, studies, targets, regime, rng)
    except Unreachable as e:  # e.g. with a part removed that makes the MDEs huge: said, not a NaN figure
        return {**out, "no_power": str(e)}
    return {**out, "power": pw["all"], "power_kinds": {k: pw[k] for k in judged(regime)},
            "mde": float(np.median(list(targets.values()))),
            "drift": max(abs(reported[k] / targets[k] - 1) for k in judged(regime))}


def fails(f: dict[str, float], studies: int, judged_rows: int) -> str:
    """Which targets a row of figures misses (beyond two Monte-Carlo standard errors)."""
    mc = lambda p, n: 2 * np.sqrt(p * (1 - p) / n)  # noqa: E731
    rows = studies * judged_rows  # judged intervals per setting (a study's rows besides any identical ones)
    out = []
    if f["fwer"] > 0.05 + mc(0.05, studies):
        out.append("FWER")
    if not 0.93 - mc(0.95, rows) <= f["coverage"] <= 0.97 + mc(0.95, rows):
        out.append("coverage")
    if not 0.93 - mc(0.95, rows * 6) <= f["class_coverage"] <= 0.97 + mc(0.95, rows * 6):
        out.append("class coverage")
    if "power" in f and not 0.77 - mc(0.8, rows) <= f["power"] <= 0.83 + mc(0.8, rows):
        out.append("power at MDE")
    return ", ".join(out) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=400, help="simulated studies per setting")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--regime", choices=list(sim.REGIMES), nargs="+", default=list(sim.REGIMES))
    ap.add_argument("--no-power", action="store_true", help="FWER and coverage only (the power fixed point "
                    "costs as much again)")
    ap.add_argument("--ablate", action="store_true", help="also remove each guarded part in turn")
    args = ap.parse_args()
    parts = [None] + (["seed part", "image part", "seed x image correction", "finite image df",
                       "common seed component", "moderation prior", "Holm", "noncentral t (MDE)"]
                      if args.ablate else [])
    print(f"{args.studies} studies per setting; power at the MDE: raw p < 0.05/{sim.N_VARIANTS}")
    for name in args.regime:
        regime = sim.REGIMES[name]
        kinds = judged(regime)
        print(f"\n### regime: {name}\n")
        print(f"| removed | seeds | FWER | coverage | {' / '.join(kinds)} | class coverage (worst class; "
              f"classes < 10 images) | power at MDE | {' / '.join(kinds)} | MDE | misses |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for part in parts:
            for n in args.seeds:
                with sim.ablated(part):
                    f = figures(n, args.studies, 1000 * n, regime, power=not args.no_power)
                by_kind = " / ".join(f"{f['kinds'][k]:.3f}" for k in kinds)
                pw = (f"{f['power']:.3f} | " + " / ".join(f"{f['power_kinds'][k]:.2f}" for k in kinds)
                      + f" | {f['mde']:.3f} (fixed point to {f['drift']:.0%})") if "power" in f else (
                      f"n/a: {f['no_power']} | | " if "no_power" in f else "| |")
                print(f"| {part or '(nothing: the method)'} | {n} | {f['fwer']:.3f} | {f['coverage']:.3f} | {by_kind} "
                      f"| {f['class_coverage']:.3f} ({f['worst_class']:.3f}; {f['small_class']:.3f}) | {pw} "
                      f"| {fails(f, args.studies, sum(k != 'same' for k in regime.kinds))} |", flush=True)


if __name__ == "__main__":
    main()
