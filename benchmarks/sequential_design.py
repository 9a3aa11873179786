"""The sequential design's operating characteristics (``fer_core/sequential.py``, ``design.sequential``).

Two parts, each against the fixed design at the maximum seeds:

1. The canonical distribution (z statistics, seed variance only; ``sequential.expected_trainings``):
   family-wise error under the global null with and without futility stops and without the spending,
   and the expected trainings with no effect and with a third of the rows at min_effect.
2. The report's own statistics on the simulation generator of ``tests/report/test_stats_simulation.py``
   (18 variants in every regime, looks [3, 5, 8, 12]; ``tests/report/test_sequential_simulation.py``
   runs the same with fewer studies): FWER under the global null (no futility stops) with and without
   the spending, and with a third of the rows carrying an effect their power and the trainings used.

    python benchmarks/sequential_design.py [--studies 120] [--canonical 4000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "report"))

from fer_core import sequential

LOOKS = (3, 5, 8, 12)


def se(p: float, n: int) -> float:
    return float(np.sqrt(p * (1 - p) / n))


def canonical(studies: int) -> None:
    print(f"## canonical distribution: 18 rows, looks {list(LOOKS)}, {studies} studies per line\n")
    print("| procedure | effect rows | FWER (MC se) | trainings / fixed |")
    print("|---|---|---|---|")
    for label, plan in (("spending, futility", sequential.Plan(LOOKS, 0.02)),
                        ("spending, no futility", sequential.Plan(LOOKS, 0.02, futility=False)),
                        ("nominal 0.05 every look, no futility",
                         sequential.Plan(LOOKS, 0.02, spending="nominal", futility=False))):
        for eff in (0, 6):
            r = sequential.expected_trainings(plan, 18, eff, studies=studies, seed=1)
            print(f"| {label} | {eff} | {r['fwer']:.3f} ({se(r['fwer'], studies):.3f}) | "
                  f"{r['expected'] / r['maximum']:.2f} |")
    print()


def report_level(studies: int) -> None:
    import test_sequential_simulation as sim
    from test_stats_simulation import K, true_f1

    min_effect = float(abs((true_f1(np.eye(K)[4] * sim.SHIFT) - true_f1(np.zeros(K))).mean()))
    print(f"## the report's statistics on the simulation generator: 18 variants, looks {list(LOOKS)}, "
          f"{studies} studies per line, min_effect {min_effect:.3f}\n")
    t0 = time.time()
    null = sim.run(studies, planted=False, min_effect=0.1, seed=3, spendings=("obrien_fleming", "nominal"),
                   futility=False)
    planted = sim.run(studies, planted=True, min_effect=min_effect, seed=4)
    no_futility = sim.run(studies, planted=True, min_effect=min_effect, seed=4, futility=False)  # same studies
    print("| setting | design | FWER (MC se) | power on effect rows | trainings / fixed |")
    print("|---|---|---|---|---|")
    for key, label in (("fixed", "fixed, 12 seeds"), ("obrien_fleming", "sequential, spending"),
                       ("nominal", "sequential, nominal 0.05 every look")):
        if f"fwer_{key}" in null:
            f = null[f"fwer_{key}"]
            print(f"| global null, no futility | {label} | {f:.3f} ({se(f, studies):.3f}) | | "
                  f"{null[f'trainings_{key}']:.2f} |")
    for key, label in (("fixed", "fixed, 12 seeds"), ("obrien_fleming", "sequential, spending")):
        f = planted[f"fwer_{key}"]
        print(f"| 6 of 18 rows with an effect | {label} | {f:.3f} ({se(f, studies):.3f}) | "
              f"{planted[f'power_{key}']:.3f} | {planted[f'trainings_{key}']:.2f} |")
    f = no_futility["fwer_obrien_fleming"]
    print(f"| 6 of 18 rows with an effect | sequential, spending, no futility | {f:.3f} ({se(f, studies):.3f}) | "
          f"{no_futility['power_obrien_fleming']:.3f} | {no_futility['trainings_obrien_fleming']:.2f} |")
    print(f"\n({time.time() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=120, help="simulated studies per line (report's statistics)")
    ap.add_argument("--canonical", type=int, default=4000, help="studies per line on the canonical distribution")
    args = ap.parse_args()
    canonical(args.canonical)
    report_level(args.studies)


if __name__ == "__main__":
    main()
