"""The held-out statistics proven on simulated studies with a known truth (no training).

A simulated study: a held-out set of N images (labels drawn from the class priors) shared by
every trial; a trial (variant v, seed s) predicts argmax of

    score_i = gamma * onehot(y_i) + u_i + w_vi + beta_vs + e_vsi

u_i the image effect, the same for every trial (the finite evaluation set), w_vi what variant v
gets right or wrong on image i whatever the seed (so Δs depend on the images), beta_vs = mu_v + seed
effect (class biases; part of it shared by the variants of one seed, so pairs are correlated),
e_vsi the seed x image interaction. Given beta the population confusion rates have a closed
form (one Gauss-Hermite integral), so the true expected per-class F1, macro-F1 and Δ are known
to within 1e-3 without simulation. The test checks, for 3, 5 and 10 seeds:

- null (every variant distributed as the baseline): the share of studies with any "better" /
  "worse" verdict among 18 variants is at most 5 % (+ 2 Monte-Carlo standard errors);
- planted effects: the 95 % intervals of Δ macro-F1, and of each class's Δ F1, cover the truth
  in 93-97 % of cases;

and that each guarantee fails when the Holm correction, the seed part or the image part of the
variance is removed.

Nested units (``stats.estimate_nested``, used by benchmarks/search_efficiency.py's held-out
confirmation): a search repeated R times picks a config per repetition, i.e. class biases
mu + tau z_r, and each chosen config is re-trained with S fresh seeds; the truth integrates over
the search's draw too. Averaging the seeds within a repetition covers the true Δ between two
searches; pooling the R x S values as independent units does not when the search's draw varies.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import ndtr

from fer_core.report import stats

K = 5
PRIORS = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
N_IMAGES = 300
GAMMA = 2.0  # class signal
SIGMA_U = 1.0  # image effect, shared by every trial
SIGMA_W = 0.8  # variant x image effect: what a variant gets right on which image, shared by its seeds
SIGMA_E = 0.4  # seed x image interaction
SIGMA_A = 0.25  # seed effect on the class biases
RHO = 0.5  # share of the seed effect common to the variants of one seed
# planted effects: class-bias shifts (a variant that favours one class, one that hurts another, ...)
PLANTED = [np.array(m, dtype=float) for m in (
    [0, 0, 0, 0, 0.5], [-0.4, 0, 0, 0, 0], [0, -0.3, 0.3, 0, 0], [0.2, 0, 0, -0.3, 0.4], [0, 0, 0, 0, 0],
    [0, 0.4, 0, 0, 0])]
N_VARIANTS = 18


def _population_f1(beta: np.ndarray) -> np.ndarray:
    """Per-class F1 on the image population for class biases ``beta`` (T, K): exact up to quadrature."""
    z, w = hermegauss(40)
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
    tp = PRIORS * rates[:, np.arange(K), np.arange(K)]
    predicted = (PRIORS[None, :, None] * rates).sum(1)
    return 2 * tp / (PRIORS + predicted)


@pytest.fixture(scope="module")
def truth() -> dict[int, np.ndarray]:
    """Expected per-class F1 over seeds for each distinct mu (index into PLANTED; -1 = baseline)."""
    rng = np.random.default_rng(12345)
    xi = rng.standard_normal((4000, K)) * SIGMA_A  # the seed effect's marginal distribution
    out = {-1: _population_f1(xi).mean(0)}
    for j, mu in enumerate(PLANTED):
        out[j] = _population_f1(mu + xi).mean(0)
    return out


def simulate(rng: np.random.Generator, n_seeds: int, mus: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One study: labels (N,) and predictions (V, S, N) of the baseline (mus[0]) and the variants."""
    y = rng.choice(K, size=N_IMAGES, p=PRIORS)
    u = rng.standard_normal((N_IMAGES, K)) * SIGMA_U
    v = len(mus)
    shared = rng.standard_normal((1, n_seeds, 1, K))
    own = rng.standard_normal((v, n_seeds, 1, K))
    beta = np.stack(mus)[:, None, None, :] + SIGMA_A * (np.sqrt(RHO) * shared + np.sqrt(1 - RHO) * own)
    w = rng.standard_normal((v, 1, N_IMAGES, K)) * SIGMA_W
    e = rng.standard_normal((v, n_seeds, N_IMAGES, K)) * SIGMA_E
    score = GAMMA * (np.arange(K) == y[:, None]) + u + w + beta + e
    return y, score.argmax(-1)


def verdicts(y: np.ndarray, preds: np.ndarray, *, seed_part=True, image_part=True, correct=True, pooled=True):
    """Per variant vs the baseline (row 0): Δ macro-F1 estimate, per-class Δ estimate, decisive verdicts."""
    f1, psi = stats.f1_parts(y, preds, K)  # (V, S, K), (V, S, N, K)
    macro, macro_psi = f1.mean(-1), psi.mean(-1)
    kw = {"seed_part": seed_part, "image_part": image_part}
    # seeds on axis 0, images on axis 1: (S, V-1) and (S, N, V-1)
    est = stats.estimate(macro[1:].T, np.moveaxis(macro_psi[1:], 0, -1), macro[0][:, None],
                         macro_psi[0][..., None], **kw)
    cls = stats.estimate(np.moveaxis(f1[1:], 0, 1), np.moveaxis(psi[1:], 0, 2), f1[0][:, None],
                         psi[0][:, :, None], **kw)  # (V-1, K)
    if pooled:
        # the table's rows share seeds and images: their df come from the pooled variance ratio
        est = stats.restack(stats.moderate(stats.unstack(est)))
        cls = stats.restack(stats.moderate(stats.unstack(cls)))
    p = est.p_value
    adjusted = np.asarray(stats.holm(p)) if correct else p
    return est, cls, bool((adjusted < stats.ALPHA).any())


def run(n_seeds: int, studies: int, planted: bool, truth, seed: int, **kw) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    idx = [j % len(PLANTED) for j in range(N_VARIANTS)] if planted else [-1] * N_VARIANTS
    mus = [np.zeros(K)] + [PLANTED[j] if j >= 0 else np.zeros(K) for j in idx]
    true_cls = np.stack([truth[j] - truth[-1] for j in idx])  # (V-1, K)
    true_macro = true_cls.mean(-1)
    any_decisive = covered = covered_cls = 0
    for _ in range(studies):
        y, preds = simulate(rng, n_seeds, mus)
        est, cls, decisive = verdicts(y, preds, **{k: v for k, v in kw.items() if k != "correct"},
                                      correct=kw.get("correct", True))
        any_decisive += decisive
        lo, hi = est.ci()
        covered += ((lo <= true_macro) & (true_macro <= hi)).mean()
        lo, hi = cls.ci()
        covered_cls += ((lo <= true_cls) & (true_cls <= hi)).mean()
    return {"fwer": any_decisive / studies, "coverage": covered / studies, "class_coverage": covered_cls / studies}


STUDIES = 300


@pytest.mark.parametrize("n_seeds", [3, 5, 10])
def test_null_family_wise_error_and_planted_coverage(truth, n_seeds):
    null = run(n_seeds, STUDIES, planted=False, truth=truth, seed=n_seeds)
    mc = 2 * np.sqrt(0.05 * 0.95 / STUDIES)
    assert null["fwer"] <= 0.05 + mc, null
    assert 0.93 <= null["coverage"] <= 0.97, null
    planted = run(n_seeds, STUDIES, planted=True, truth=truth, seed=100 + n_seeds)
    assert 0.93 <= planted["coverage"] <= 0.97, planted
    assert 0.93 <= planted["class_coverage"] <= 0.97, planted


def test_each_part_is_needed(truth):
    # without Holm, 18 variants under the null give far more than 5 % of studies a decisive verdict
    assert run(3, STUDIES, planted=False, truth=truth, seed=7, correct=False)["fwer"] > 0.15
    # without the seed part, few seeds under-cover; without the image part, many seeds do
    assert run(3, STUDIES, planted=True, truth=truth, seed=8, seed_part=False)["coverage"] < 0.90
    no_images = run(10, STUDIES, planted=True, truth=truth, seed=9, image_part=False)
    assert no_images["coverage"] < 0.90 and no_images["class_coverage"] < 0.90


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
    for _ in range(STUDIES):
        y, preds = simulate_searches(rng, reps, 3, mus)
        f1, psi = stats.f1_parts(y, preds, K)  # (M, R, S, K), (M, R, S, N, K)
        v, p = f1.mean(-1), psi.mean(-1)  # macro-F1 and its influences
        lo, hi = stats.estimate_nested(v[1], p[1], v[0], p[0]).ci()
        nested += lo <= true_delta <= hi
        flat = [x.reshape(reps * 3, *x.shape[2:]) for x in (v[1], p[1], v[0], p[0])]
        lo, hi = stats.estimate(*flat).ci()
        pooled += lo <= true_delta <= hi
    assert 0.93 <= nested / STUDIES <= 0.98, nested / STUDIES
    assert pooled / STUDIES < 0.88, pooled / STUDIES
