"""The held-out statistics proven on simulated studies with a known truth (no training), through the
report's own path: ``evidence.held_out_columns`` and ``evidence.verdict`` (and, for an incomplete
grid, ``effects.factorial_effects``).

A simulated study: a held-out set of N images with fixed class counts, two classes of 9 and 6
images (the few-shot tail), shared by every trial; a trial (variant v, seed s) predicts argmax of

    score_i = gamma * onehot(y_i) + u_i + w_vi + beta_vs + e_vsi

u_i the image effect, the same for every trial (the finite evaluation set), w_vi what variant v
gets right or wrong on image i whatever the seed, beta_vs = mu_v + seed effect (class biases; part
of it shared by the variants of one seed), e_vsi the seed x image interaction. Given beta the
population confusion rates have a closed form (one Gauss-Hermite integral), so the true expected
per-class F1, macro-F1 and Δ are known to within 1e-3 without simulation. Every study holds the
regimes at once, among its 18 variants (the ``MIXED`` regime):

- two rows identical to the baseline (zero seed variance, Δ exactly 0);
- four high-agreement rows (w, e and the seed effect mostly the baseline's: ~90 % of predictions
  identical to the baseline's seed by seed), the rest agreeing ~55 %;
- four rows with 6x the baseline's own seed variance (unequal seed variances across rows);
- three rows missing a seed (paired on the seeds they share);
- classes of 9 and 6 test images.

Three more regimes give a whole table to one hard case (``REGIMES``): every variant agreeing with the
baseline on 85-95 % of predictions; seed variances spread 1x-6x across the rows with the baseline at 6x (the
rows' common seed part then dominates); classes of 10, 7 and 5 test images at seeds that barely move the
models (the image part dominates). Checked in every regime (the mixed one at 3 and 10 seeds, the others at
one seed count each; benchmarks/stats_simulation.py runs all at 3, 5 and 10 with ten times the studies): under
the null (every mu the baseline's) the share of studies with any decisive verdict is at most 5 % + 2
Monte-Carlo standard errors; with planted effects the 95 % intervals of Δ macro-F1 and of every class's Δ F1
cover the truth in 93-97 %, and no kind of row or class falls far below. The studies per setting are few to
keep the suite fast.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import stats as st
from scipy.special import ndtr

from fer_core.report import evidence, stats
from fer_core.report.evidence import ReportSettings, Variant

COUNTS = np.array([120, 90, 50, 25, 9, 6])
K = len(COUNTS)
N_IMAGES = int(COUNTS.sum())
PRIORS = COUNTS / N_IMAGES
LABELS = np.repeat(np.arange(K), COUNTS)
NAMES = [f"c{c}" for c in range(K)]
GROUPS = {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
GAMMA = 2.0  # class signal
SIGMA_U = 1.0  # image effect, shared by every trial
SIGMA_W = 0.8  # variant x image effect: what a variant gets right on which image, shared by its seeds
SIGMA_E = 0.4  # seed x image interaction
SIGMA_A = 0.25  # seed effect on the class biases
RHO = 0.5  # share of the seed effect common to the variants of one seed
AGREE = 0.97  # high-agreement rows: share of the baseline's w, e and own seed effect (~90 % same predictions)
WIDE = np.sqrt(6.0)  # unequal rows: their own seed effect's sd times this (6x the variance)
PLANTED = [np.array(m, dtype=float) for m in (
    [0, 0, 0, 0, 0.6, 0], [-0.4, 0, 0, 0, 0, 0], [0, -0.3, 0.3, 0, 0, 0], [0.2, 0, 0, -0.3, 0, 0.5],
    [0, 0, 0, 0, 0, 0], [0, 0.4, 0, 0, 0, 0])]
N_VARIANTS = 18
KIND = ["same"] * 2 + ["agree"] * 4 + ["wide"] * 4 + ["missing"] * 3 + ["plain"] * 5


@dataclass(frozen=True)
class Regime:
    """One simulated design: the 18 variants' kinds, the held-out class sizes, and per kind the sd of its own
    seed effect (times the plain rows') and its agreement with the baseline (the share of the baseline's own
    seed effect, w and e it takes). "same" rows copy the baseline's predictions, "missing" rows lose a seed."""

    name: str
    kinds: tuple[str, ...] = tuple(KIND)
    counts: tuple[int, ...] = tuple(COUNTS)
    scale: dict[str, float] = field(default_factory=lambda: {"wide": WIDE})
    agree: dict[str, float] = field(default_factory=lambda: {"agree": AGREE})
    base_scale: float = 1.0  # the baseline's own seed effect
    sigma_a: float = SIGMA_A

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def labels(self) -> np.ndarray:
        return np.repeat(np.arange(K), self.counts)

    def own_sd(self, kind: str) -> float:
        """The sd of a row's own seed effect (per unit of the plain rows')."""
        if kind == "base":
            return self.base_scale
        a, s = self.agree.get(kind, 0.0), self.scale.get(kind, 1.0)
        return float(np.sqrt(a**2 * self.base_scale**2 + (1 - a**2) * s**2))


MIXED = Regime("mixed")
REGIMES = {r.name: r for r in (
    MIXED,
    # same-architecture variants: 85 / 90 / 95 % of predictions the baseline's, seed by seed
    Regime("agreeing", ("agree85", "agree90", "agree95") * 6, agree={"agree85": 0.9, "agree90": 0.955, "agree95": 0.99}),
    # seed variances 1x-6x across the rows and 6x for the baseline: the part every Δ shares dominates
    Regime("unequal", tuple(f"{v}x" for v in range(1, 7)) * 3, scale={f"{v}x": float(np.sqrt(v)) for v in range(1, 7)},
           base_scale=float(np.sqrt(6))),
    # classes of 10, 7 and 5 test images, seeds that barely move the models: the image part dominates
    Regime("small classes", ("plain",) * 18, counts=(150, 100, 40, 10, 7, 5), sigma_a=0.05),
)}


def _population_f1(beta: np.ndarray, priors: np.ndarray = PRIORS) -> np.ndarray:
    """Per-class F1 on the image population (class shares ``priors``) for class biases ``beta`` (T, K): exact
    up to quadrature."""
    z, w = hermegauss(24)
    w = w / w.sum()
    sigma = np.sqrt(SIGMA_U**2 + SIGMA_W**2 + SIGMA_E**2)
    t = beta.shape[0]
    rates = np.zeros((t, K, K))  # P(pred = c | y)
    for y in range(K):
        m = beta + GAMMA * (np.arange(K) == y)  # (T, K)
        diff = (m[:, :, None] - m[:, None, :]) / sigma  # (T, c, j)
        phi = ndtr(diff[..., None] + z)  # (T, c, j, Q)
        phi[:, np.arange(K), np.arange(K), :] = 1.0
        rates[:, y, :] = (phi.prod(axis=2) * w).sum(-1)
    tp = priors * rates[:, np.arange(K), np.arange(K)]
    predicted = (priors[None, :, None] * rates).sum(1)
    return 2 * tp / (priors + predicted)


def true_f1(mu: np.ndarray, kind: str = "plain", regime: Regime = MIXED, draws: int = 800) -> np.ndarray:
    """Expected per-class F1 over seeds for class biases ``mu`` of a row of ``kind`` (common random numbers:
    the same standard normal draws for every call, so truths differ only by mu and the seed sd)."""
    sd = regime.sigma_a * np.sqrt(RHO + regime.own_sd(kind) ** 2 * (1 - RHO))
    xi = np.random.default_rng(12345).standard_normal((draws, K)) * sd
    return _population_f1(mu + xi, np.asarray(regime.counts) / sum(regime.counts)).mean(0)


@functools.cache
def truths(regime: Regime) -> dict:
    """Expected per-class F1 for each (planted index or -1, kind); the baseline's under (-1, "base")."""
    out = {(-1, "base"): true_f1(np.zeros(K), "base", regime)}
    for kind in set(regime.kinds) - {"same"}:
        out[-1, kind] = true_f1(np.zeros(K), kind, regime)
        for j, mu in enumerate(PLANTED):
            out[j, kind] = true_f1(mu, kind, regime)
    return out


def simulate(rng: np.random.Generator, n_seeds: int, mus: list[np.ndarray], kinds: list[str],
             regime: Regime = MIXED) -> np.ndarray:
    """One study's predictions (V, S, N) of the baseline (mus[0], kinds[0] == "plain") and the variants."""
    y = regime.labels
    n_img = len(y)
    u = rng.standard_normal((n_img, K)) * SIGMA_U
    v = len(mus)
    shared = rng.standard_normal((1, n_seeds, 1, K))
    own = rng.standard_normal((v, n_seeds, 1, K))
    w = rng.standard_normal((v, 1, n_img, K)) * SIGMA_W
    e = rng.standard_normal((v, n_seeds, n_img, K)) * SIGMA_E
    own[0] *= regime.base_scale
    for i, kind in enumerate(kinds[1:], start=1):
        own[i] *= regime.scale.get(kind, 1.0)
        a = regime.agree.get(kind, 0.0)
        if a:  # mostly the baseline's own noise: a same-architecture variant
            for x in (own, w, e):
                x[i] = a * x[0] + np.sqrt(1 - a**2) * x[i]
    beta = np.stack(mus)[:, None, None, :] + regime.sigma_a * (np.sqrt(RHO) * shared + np.sqrt(1 - RHO) * own)
    preds = (GAMMA * (np.arange(K) == y[:, None]) + u + w + beta + e).argmax(-1)
    for i, kind in enumerate(kinds):
        if kind == "same":
            preds[i] = preds[0]
    return preds


def study_rows(preds: np.ndarray, kinds: list[str], settings: ReportSettings | None = None,
               regime: Regime = MIXED) -> dict[str, dict]:
    """The report's held-out columns for one simulated study (variant names v00.., baseline "base")."""
    n = preds.shape[1]
    variants = [Variant("base", [str(s) for s in range(n)], preds[0])]
    for i, kind in enumerate(kinds[1:], start=1):
        keep = list(range(n - 1)) if kind == "missing" else list(range(n))
        variants.append(Variant(f"v{i:02d}", [str(s) for s in keep], preds[i][keep]))
    return evidence.held_out_columns(variants, regime.labels, "base", "macro_f1", NAMES, GROUPS, [],
                                     settings or ReportSettings())


def run(n_seeds: int, studies: int, planted: bool, seed: int, regime: Regime = MIXED) -> dict[str, float]:
    """FWER of any decisive verdict, coverage of Δ macro-F1 and of per-class Δ F1 (all rows), and the
    Δ coverage per kind of row and per class, over ``studies`` simulated studies of ``regime``."""
    rng = np.random.default_rng(seed)
    truth = truths(regime)
    kinds_v = list(regime.kinds)
    idx = [j % len(PLANTED) for j in range(N_VARIANTS)] if planted else [-1] * N_VARIANTS
    kinds = ["plain", *kinds_v]
    mus = [np.zeros(K)] + [PLANTED[j] if j >= 0 and k != "same" else np.zeros(K) for j, k in zip(idx, kinds_v)]
    base = truth[-1, "base"]
    true_cls = np.stack([np.zeros(K) if k == "same" else truth[j, k] - base for j, k in zip(idx, kinds_v)])
    true_macro = true_cls.mean(-1)
    counts = np.asarray(regime.counts)
    decisive, cov, cov_cls, cov_small, by_kind = 0, [], [], [], {k: [] for k in set(kinds_v)}
    by_class: list[list[bool]] = [[] for _ in range(K)]
    for _ in range(studies):
        rows = study_rows(simulate(rng, n_seeds, mus, kinds, regime), kinds, regime=regime)
        hit = False
        for i, kind in enumerate(kinds_v):
            r = rows[f"v{i + 1:02d}"]
            hit |= evidence.verdict(r, True, N_VARIANTS).startswith(("better", "worse"))
            c = r["delta_ci_lo"] <= true_macro[i] <= r["delta_ci_hi"]
            cov.append(c)
            by_kind[kind].append(c)
            for k in range(K):
                col = "delta_" + evidence.class_column(k, NAMES[k])
                cov_cls.append(r[col + "_ci_lo"] <= true_cls[i, k] <= r[col + "_ci_hi"])
                by_class[k].append(cov_cls[-1])
                if counts[k] < 10:  # the few-shot classes (9 and 6 test images in the mixed regime)
                    cov_small.append(cov_cls[-1])
        decisive += hit
    return {"fwer": decisive / studies, "coverage": float(np.mean(cov)), "class_coverage": float(np.mean(cov_cls)),
            "small_class_coverage": float(np.mean(cov_small)),
            "worst_class_coverage": float(min(np.mean(v) for v in by_class)),
            **{f"coverage_class_{counts[k]}": float(np.mean(v)) for k, v in enumerate(by_class)},
            **{f"coverage_{k}": float(np.mean(v)) for k, v in by_kind.items()}}


@contextlib.contextmanager
def ablated(part: str | None) -> Iterator[None]:
    """fer_core.report.stats with one guarded part removed (None: as it is)."""
    saved = {k: getattr(stats, k) for k in ("estimate", "moderate", "holm", "noncentrality")}
    est, mod = saved["estimate"], saved["moderate"]

    def estimate(*a, **k):
        if part == "finite image df":
            k["df_images"] = stats.DF_MAX
        return est(*a, **k, **{"seed part": {"seed_part": False}, "image part": {"image_part": False},
                               "seed x image correction": {"interaction": False}}.get(part or "", {}))

    if part in ("seed part", "image part", "seed x image correction", "finite image df"):
        stats.estimate = estimate
        if part == "seed part":  # moderation would put the seed variance back from each row's own S²
            stats.moderate = lambda rows: list(rows)
    elif part == "common seed component":
        stats.moderate = lambda rows: mod(rows, common=False)
    elif part == "moderation prior":
        stats.moderate = lambda rows: mod(rows, prior=False)
    elif part == "Holm":
        stats.holm = lambda p: [float(x) for x in p]
    elif part == "noncentral t (MDE)":
        stats.noncentrality = lambda df, alpha=stats.ALPHA, power=stats.POWER: (
            st.t.ppf(1 - alpha / 2, np.minimum(df, stats.DF_MAX)) + st.t.ppf(power, np.minimum(df, stats.DF_MAX)))
    elif part is not None:
        raise ValueError(part)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(stats, k, v)


STUDIES = 40


@pytest.mark.parametrize(("regime", "n_seeds"), [("mixed", 3), ("mixed", 10), ("agreeing", 5), ("unequal", 3),
                                               ("small classes", 10)])
def test_null_family_wise_error_and_planted_coverage_in_every_regime(regime, n_seeds):
    """Each regime at one or two seed counts (benchmarks/stats_simulation.py runs every regime at 3, 5 and 10
    seeds with ten times the studies)."""
    reg = REGIMES[regime]
    null = run(n_seeds, STUDIES, planted=False, seed=n_seeds, regime=reg)
    assert null["fwer"] <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / STUDIES), null
    planted = run(n_seeds, STUDIES, planted=True, seed=100 + n_seeds, regime=reg)
    # 93-97 %, widened by the Monte-Carlo error of STUDIES x 16 correlated intervals (about 1 %)
    for key in ("coverage", "class_coverage"):
        assert 0.92 <= planted[key] <= 0.98, (key, planted)
    for kind in set(reg.kinds) - {"same"}:  # no kind of row and no class hides under the average
        assert 0.88 <= planted[f"coverage_{kind}"] <= 1.0, (kind, planted)
    assert planted["worst_class_coverage"] >= 0.88, planted
    if "same" in reg.kinds:
        assert planted["coverage_same"] == 1.0  # an exact row's interval is its (true) 0


# what each guarded part protects, and the figure that breaks plainly without it (3 seeds; the method's own
# figures: FWER 0.05, coverage 0.96, class coverage 0.965). benchmarks/stats_simulation.py --ablate prints
# every part's figures with more studies, the parts whose removal only costs power among them.
GUARDS = {
    "seed part": ("coverage", lambda f: f < 0.90),  # intervals of the image part alone: ~0.81
    "image part": ("class_coverage", lambda f: f < 0.91),  # the seeds alone, blind to the shared images: ~0.87
    "Holm": ("fwer", lambda f: f > 0.15),  # 18 unadjusted tests: ~0.4 of null studies say something
}


@pytest.mark.parametrize("part", list(GUARDS))
def test_each_guarded_part_removed_fails_plainly(part):
    figure, broken = GUARDS[part]
    with ablated(part):
        got = run(3, 40, planted=figure != "fwer", seed=7)
    assert broken(got[figure]), (part, got)  # intact, the same figures meet their targets (the test above)


NESTED_STUDIES = 300  # stats.estimate_nested alone: cheap
TAU = 0.8  # a repetition's chosen config: class-bias shift drawn per search (larger than the seed effect)


def simulate_searches(rng: np.random.Generator, reps: int, seeds: int, mus: list[np.ndarray]):
    """Labels (N,) and predictions (M, R, S, N): method m's repetition r chose biases mu_m + TAU z_mr and
    an image profile of its own (w), re-trained with S fresh seeds that every config shares in part."""
    y = rng.choice(K, size=N_IMAGES, p=PRIORS)
    u = rng.standard_normal((N_IMAGES, K)) * SIGMA_U
    m = len(mus)
    z = rng.standard_normal((m, reps, 1, 1, K)) * TAU
    shared = rng.standard_normal((1, 1, seeds, 1, K))  # fresh seed s is the same seed for every config
    own = rng.standard_normal((m, reps, seeds, 1, K))
    beta = np.stack(mus)[:, None, None, None, :] + z + SIGMA_A * (np.sqrt(RHO) * shared + np.sqrt(1 - RHO) * own)
    w = rng.standard_normal((m, reps, 1, N_IMAGES, K)) * SIGMA_W
    e = rng.standard_normal((m, reps, seeds, N_IMAGES, K)) * SIGMA_E
    return y, (GAMMA * (np.arange(K) == y[:, None]) + u + w + beta + e).argmax(-1)


@pytest.mark.parametrize("reps", [3, 5])
def test_nested_units_cover_the_search_level_truth_and_pooled_ones_do_not(reps):
    rng = np.random.default_rng(reps)
    g = rng.standard_normal((4000, K)) * np.hypot(TAU, SIGMA_A)  # the search's draw plus the seed's
    mus = [np.zeros(K), PLANTED[0]]  # (a) and (c): a real difference in one class's bias
    true_delta = (_population_f1(mus[1] + g).mean(0) - _population_f1(mus[0] + g).mean(0)).mean()
    nested = pooled = 0
    for _ in range(NESTED_STUDIES):
        y, preds = simulate_searches(rng, reps, 3, mus)
        f1, psi = stats.f1_parts(y, preds, K)  # (M, R, S, K), (M, R, S, N, K)
        v, p = f1.mean(-1), psi.mean(-1)  # macro-F1 and its influences
        lo, hi = stats.estimate_nested(v[1], p[1], v[0], p[0]).ci()
        nested += lo <= true_delta <= hi
        flat = [x.reshape(reps * 3, *x.shape[2:]) for x in (v[1], p[1], v[0], p[0])]
        lo, hi = stats.estimate(*flat).ci()
        pooled += lo <= true_delta <= hi
    assert 0.93 <= nested / NESTED_STUDIES <= 0.98, nested / NESTED_STUDIES
    assert pooled / NESTED_STUDIES < 0.88, pooled / NESTED_STUDIES
