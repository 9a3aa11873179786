"""How often the report's convergence rule calls a plateau "still rising", and how often it catches a rise.

Simulated validation curves with a known shape: a plateau (95 % of the rise done by 30 % of the
schedule) and a slow rise (time constant twice the schedule: the last quarter still adds ~0.024 macro-F1),
plus Gaussian epoch-to-epoch noise, judged by ``fer_core.report.adequacy.curve_converged``; per cell the
share of curves judged converged (plateau) and judged rising (slow rise), 400 curves each. A row of the
report fails only when most of its seeds are rising, so a per-seed false alarm p gives a row false alarm
of about 3p^2 at 3 seeds.

    python benchmarks/adequacy_rule.py
"""

from __future__ import annotations

import numpy as np

from fer_core.report.adequacy import curve_converged


def curves(rng: np.random.Generator, n: int, tau: float, sigma: float, reps: int) -> np.ndarray:
    t = np.arange(n)
    return 0.05 + 0.3 * (1 - np.exp(-(t + 1) / tau)) + rng.normal(0, sigma, (reps, n))


def main() -> None:
    rng = np.random.default_rng(0)
    print("| epochs | noise SD | plateau judged converged | slow rise: last-quarter gain / noise | judged rising |")
    print("|---|---|---|---|---|")
    for n in (8, 12, 20, 30, 40):
        for sigma in (0.002, 0.01, 0.02, 0.04):
            plateau = np.mean([curve_converged(c, n)[0] for c in curves(rng, n, n / 10, sigma, 400)])
            rising = np.mean([not curve_converged(c, n)[0] for c in curves(rng, n, 2 * n, sigma, 400)])
            t = np.arange(n)
            mean = 0.05 + 0.3 * (1 - np.exp(-(t + 1) / (2 * n)))
            gain = mean[-1] - mean[-int(np.ceil(n / 4)) - 1]
            print(f"| {n} | {sigma:.3f} | {plateau:.3f} | {gain / sigma:.1f} | {rising:.3f} |")


if __name__ == "__main__":
    main()
