"""Sequential designs: decide each row of a table with the fewest trainings (``design.sequential``).

A one-at-a-time (or grid) study trains every row on the same seeds. With ``design.sequential:
{looks: [3, 5, 8, 12], min_effect: 0.02}`` it trains in looks instead: at look k every *open* row
and the baseline have the first ``looks[k]`` seeds of the study's seed list; after each look the
report's own test (the moderated held-out t of Δ, ``fer_core/report/evidence.py``) judges every
open row, and a row stops

- decided (better / worse), when its Δ crosses its group-sequential boundary, or
- for futility, when even the maximum seeds could not detect ``min_effect``: its conditional power
  (below) is under ``futility_power`` (0.2 by default);

every other row gets the next look's seeds. The baseline runs every look's seeds while any row is
open. This module is pure numbers (numpy/scipy, no study, report or storage): ``replay`` takes a
``judge`` that tests the rows on given seeds, so the launch (``fer_core/study``), which must not
import the report, the report and the simulation test all run the very same procedure, and a
relaunch re-derives every stop from the stored trials (the decisions are a function of them).

Error across looks: alpha spending. Lan, K. K. G. & DeMets, D. L. (1983), "Discrete sequential
boundaries for clinical trials", Biometrika 70(3):659-663, with the O'Brien-Fleming-type spending
function alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) (two-sided; O'Brien, P. C. & Fleming, T. R.
(1979), "A multiple testing procedure for clinical trials", Biometrics 35:549-556). The information
fraction is t_k = seeds at look k / maximum seeds, as the issue asks (not the row's estimated
statistical information: the image part of a Δ's variance does not shrink with seeds, so the
seeds' share is the planned fraction, known before any training, which the spending needs to be
fixed in advance). Boundaries c_k solve P(|Z_j| < c_j for j < k, |Z_k| >= c_k) = alpha(t_k) -
alpha(t_(k-1)) under the canonical joint distribution (independent increments, corr(Z_j, Z_k) =
sqrt(t_j / t_k)), by the usual recursive numerical integration (Jennison & Turnbull 2000, ch. 19).
O'Brien-Fleming-type spending spends almost nothing early (looks [3, 5, 8, 12] at alpha 0.05:
nominal levels 0.00009, 0.0024, 0.015, 0.044), so the last look keeps nearly the fixed design's
level and its power. (This is Lan and DeMets' own two-sided form; software that spends alpha/2 per
side with the one-sided form, e.g. gsDesign, gets slightly stricter early boundaries.)

Error across rows: Holm on the spent level, as a graphical (closed) procedure. Maurer, W. & Bretz,
F. (2013), "Multiple testing in group sequential trials using graphical approaches", Statistics
in Biopharmaceutical Research 5(4):311-320: each row i holds a local level alpha_i (alpha / m,
m rows) and is tested with the group-sequential boundaries *computed at alpha_i*; when a row is
rejected its level is shared equally among the rows not yet rejected (Holm's graph), the
boundaries of those rows are recomputed at their larger level, and their earlier looks are
re-read with them. This is a Bonferroni-based closed test, so the family-wise error over all rows
and all looks stays at alpha (strong control).

Where this differs from the textbook, and why:

1. The statistics are t's with small, moderated df, not z's: each look's p-value is converted to
   its normal quantile and compared with the boundary's nominal level (the "significance level
   approach", Jennison & Turnbull 2000, sec. 3.8), and the rows share the baseline's seeds and a
   moderated variance, so the canonical independent-increments distribution is an approximation.
   ``tests/report/test_sequential_simulation.py`` checks the family-wise error on simulated
   studies, through the report's own statistics, and ``tests/test_sequential.py`` that dropping the
   spending (the nominal 0.05 at every look) breaks it.
2. Futility is non-binding: the boundaries are computed as if no row ever stopped for futility, so
   stopping one never raises the error rate (it only costs that row's power), and a futile row keeps
   its share of the level (it is never rejected later, nor is its level handed on).
3. Two futility stops. Conditional power under min_effect below ``futility_power`` ("even the
   maximum seeds could not detect min_effect"), and the row's unadjusted 95 % interval inside
   (-min_effect, min_effect) ("whatever the effect, it is smaller than the one worth the seeds"): a
   row with a tiny variance has a high conditional power under min_effect however close to zero its
   Δ is, and would otherwise always run to the maximum seeds. Neither is judged at the first look:
   its seed variance rests on looks[0] - 1 df (2 at 3 seeds), too rough to call a row hopeless (on the
   simulation generator, benchmarks/sequential_design.py, a first-look futility stop cost 4 points of
   power against 2 without it, for 45 % against 55 % of the fixed design's trainings). Conditional power is computed under
   |Δ| = ``min_effect`` in the direction of the estimate, on the normal scale, for crossing the
   last look's boundary at the row's current level only (later interim crossings ignored: a slight
   underestimate, so slightly more futility stops). The row's information fraction there is its
   own: the seed part of its variance shrinks as 1/seeds, the image part stays (tau = se at max
   seeds squared / se now squared).
4. A futile row keeps its level but is not re-read when others are rejected later (Maurer and
   Bretz allow it); never rejecting it is the conservative side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
from scipy import optimize, special, stats

ALPHA = 0.05
FUTILITY_POWER = 0.2
SPENDINGS = ("obrien_fleming", "nominal")  # "nominal": no spending, the level at every look (tests only)
STATUSES = ("open", "better", "worse", "futility", "within", "max_seeds")
GRID = 401  # points per look in the recursive integration (boundaries to ~1e-4 in z)


@dataclass(frozen=True)
class Plan:
    """A sequential design: seeds at each look (increasing; the last is the maximum), the smallest
    effect worth the maximum seeds, the conditional power under which a row stops for futility."""

    looks: tuple[int, ...]
    min_effect: float
    futility_power: float = FUTILITY_POWER
    alpha: float = ALPHA
    spending: str = "obrien_fleming"
    futility: bool = True  # False: no row stops for futility (the worst case for the error rate: tests)

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(n / self.looks[-1] for n in self.looks)

    def nominal(self, level: float) -> np.ndarray:
        """Two-sided nominal p-value level at each look for a row whose local level is ``level``."""
        return nominal_levels(self.fractions, float(level), self.spending)

    def spent(self, level: float, look: int) -> float:
        """The level spent on a row (local level ``level``) by the end of look ``look`` (0-based)."""
        return spending(self.fractions[look], level, self.spending)


def spending(t: float, alpha: float, kind: str = "obrien_fleming") -> float:
    """Cumulative two-sided alpha spent at information fraction ``t`` (Lan-DeMets O'Brien-Fleming
    type: 2 - 2 Phi(z_(1-alpha/2) / sqrt(t)))."""
    if kind == "nominal":
        return alpha
    if t <= 0:
        return 0.0
    return float(2 * special.ndtr(special.ndtri(alpha / 2) / np.sqrt(min(t, 1.0))))


@lru_cache(maxsize=512)
def boundaries(fractions: tuple[float, ...], alpha: float, kind: str = "obrien_fleming") -> tuple[float, ...]:
    """Two-sided z boundaries c_k, one per look, spending alpha(t_k) - alpha(t_(k-1)) at look k under
    the canonical joint distribution (score S_k ~ N(0, t_k), independent increments), by recursive
    integration of the continuation density on a grid. ``nominal``: z_(1-alpha/2) at every look."""
    if kind == "nominal":
        return tuple(float(stats.norm.isf(alpha / 2)) for _ in fractions)
    cum = [spending(t, alpha, kind) for t in fractions]
    inc = np.diff([0.0, *cum])
    out: list[float] = []
    grid = dens = None  # continuation region of the score S on a grid, and its (sub-)density there
    prev_t = 0.0
    for t, a in zip(fractions, inc):
        if grid is None:
            c = float(stats.norm.isf(a / 2)) if a > 0 else np.inf
            b = c * np.sqrt(t)
            grid = np.linspace(-b, b, GRID) if np.isfinite(b) else np.linspace(-8 * np.sqrt(t), 8 * np.sqrt(t), GRID)
            dens = stats.norm.pdf(grid, scale=np.sqrt(t))
        else:
            sd = np.sqrt(t - prev_t)
            w = np.full(len(grid), grid[1] - grid[0])  # trapezoid weights
            w[[0, -1]] /= 2
            mass = dens * w

            def excess(c: float, mass: np.ndarray = mass, sd: float = sd, t: float = t, grid: np.ndarray = grid,
                       a: float = a) -> float:
                """P(crossing at this look, not before) - its share of alpha."""
                b = c * np.sqrt(t)
                return float((mass * (special.ndtr((-b - grid) / sd) + special.ndtr((grid - b) / sd))).sum()) - a

            c = np.inf if a <= 0 else float(optimize.brentq(excess, 1e-6, 40.0, xtol=1e-7))
            b = c * np.sqrt(t) if np.isfinite(c) else 8 * np.sqrt(t) + np.abs(grid).max()
            new = np.linspace(-b, b, GRID)
            dens = (mass[None, :] * stats.norm.pdf((new[:, None] - grid[None, :]) / sd) / sd).sum(1)
            grid = new
        out.append(c)
        prev_t = t
    return tuple(out)


def nominal_levels(fractions: tuple[float, ...], alpha: float, kind: str = "obrien_fleming") -> np.ndarray:
    """The boundaries as two-sided nominal p-value levels (what a look's p must not exceed)."""
    # rounded so that the cache sees the same Holm level (alpha / m) computed along different paths
    return _nominal(tuple(round(f, 12) for f in fractions), round(alpha, 15), kind)


@lru_cache(maxsize=512)
def _nominal(fractions: tuple[float, ...], alpha: float, kind: str) -> np.ndarray:
    out = 2 * special.ndtr(-np.asarray(boundaries(fractions, alpha, kind)))
    out.setflags(write=False)  # cached: shared by every caller
    return out


@dataclass(frozen=True)
class RowTest:
    """One row's held-out test of Δ at one look: the report's columns (``evidence.held_out_columns``)."""

    delta: float
    se_seeds: float
    se_images: float
    df: float
    n: int  # paired seeds

    @cached_property
    def se(self) -> float:
        return float(np.hypot(self.se_seeds, self.se_images))

    @cached_property
    def p(self) -> float:
        """Two-sided p of Δ = 0 (t, the row's df); an exact row (no variance): 1 for Δ = 0, else 0."""
        if not np.isfinite(self.delta):
            return float("nan")
        if not self.se > 0:
            return 1.0 if self.delta == 0 else 0.0
        return float(2 * special.stdtr(max(self.df, 1e-6), -abs(self.delta) / self.se))  # scipy.stats' t, faster

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> RowTest | None:
        """From a report row's columns; None where the row has no tested Δ (fewer than two paired seeds,
        no predictions, no seed shared with the baseline)."""
        d = row.get("delta")
        if not isinstance(d, float) or d != d or int(row.get("n_paired") or 0) < 2:  # type: ignore[call-overload]
            return None  # the report's verdict too: too few paired seeds to tell
        return cls(float(d), float(row["delta_se_seeds"]), float(row["delta_se_images"]),  # type: ignore[arg-type]
                   float(row["delta_df"]), int(row["n_paired"]))  # type: ignore[arg-type]


def conditional_power(test: RowTest, plan: Plan, level: float) -> float:
    """P(crossing the last look's boundary at local level ``level`` | the data so far, |Δ| =
    min_effect in the estimate's direction): the B-value form B = z sqrt(tau), final Z = B +
    theta (1 - tau) + N(0, 1 - tau), theta = min_effect / se at the maximum seeds, tau the row's own
    information fraction (module docstring, point 3)."""
    se = test.se
    if not se > 0:  # an exact row: more seeds give the very same Δ; it detects only what it has
        return 1.0 if test.delta != 0 else 0.0
    se_max = float(np.hypot(test.se_seeds * np.sqrt(test.n / plan.max_seeds), test.se_images))
    tau = min(se_max**2 / se**2, 1.0)
    c = float(-special.ndtri(plan.nominal(level)[-1] / 2))
    z = test.delta / se
    if tau >= 1 - 1e-9:
        return 1.0 if abs(z) >= c else 0.0
    theta = plan.min_effect / se_max
    b = z * np.sqrt(tau)
    rest = np.sqrt(1 - tau)
    up = special.ndtr(-(c - b - theta * (1 - tau)) / rest)
    down = special.ndtr((-c - b + theta * (1 - tau)) / rest)
    return float(up if test.delta >= 0 else down)


def within(test: RowTest, plan: Plan) -> bool:
    """The row's unadjusted 1 - alpha interval of Δ lies inside (-min_effect, min_effect): whatever its
    effect, it is smaller than the one worth the seeds (a futility stop, non-binding like the other)."""
    if not test.se > 0:
        return abs(test.delta) < plan.min_effect
    half = float(-special.stdtrit(max(test.df, 1e-6), plan.alpha / 2)) * test.se
    return abs(test.delta) + half < plan.min_effect


@dataclass
class Row:
    """Where one row stands after the looks replayed so far."""

    name: str
    status: str = "open"  # STATUSES
    looks_run: int = 0  # looks this row has seeds of
    seeds: int = 0  # its seeds (the seeds of its last look)
    level: float = 0.0  # its local level alpha_i (Holm's share, grows as others are rejected)
    spent: float = 0.0  # level spent on it by its last look: spending(t_last, alpha_i)
    decided_at: int | None = None  # look (0-based) where it crossed
    p: float = float("nan")  # its p-value at its last look
    power: float = float("nan")  # its conditional power at its last look
    tests: list[RowTest | None] = field(default_factory=list)  # one per look it ran

    @property
    def reason(self) -> str:
        """The stopping reason in words (the report's and the dashboard's column)."""
        return {"open": "open: next look", "better": "decided: better", "worse": "decided: worse",
                "futility": f"futility: conditional power {self.power:.2f}",
                "within": "futility: 95 % interval inside ±min_effect",
                "max_seeds": "maximum seeds: no detectable difference"}[self.status]


Judge = Callable[[int, Mapping[str, int]], Mapping[str, "RowTest | None"]]


@dataclass
class State:
    """The rows after ``looks_done`` looks and the seeds the next look needs."""

    plan: Plan
    rows: dict[str, Row]
    looks_done: int

    @property
    def finished(self) -> bool:
        return self.looks_done >= len(self.plan.looks) or not self.open

    @property
    def open(self) -> list[str]:
        return [n for n, r in self.rows.items() if r.status == "open"]

    def next_seeds(self) -> dict[str, int]:
        """Seeds per row (and "" for the baseline) for the next look; empty when finished."""
        if self.finished:
            return {}
        n = self.plan.looks[self.looks_done]
        return {"": n, **{r: n for r in self.open}}

    def seeds_used(self) -> dict[str, int]:
        """Seeds per row so far, the baseline ("") included."""
        base = self.plan.looks[self.looks_done - 1] if self.looks_done else 0
        return {"": base, **{n: r.seeds for n, r in self.rows.items()}}

    def trainings(self) -> int:
        return sum(self.seeds_used().values())

    def fixed_trainings(self) -> int:
        """What the fixed design at the maximum seeds trains: every row and the baseline."""
        return (len(self.rows) + 1) * self.plan.max_seeds


def remembering(judge: Judge) -> Judge:
    """``judge`` with its answers kept: a replay to look k asks looks 0..k-1 again, and procedures replayed
    on one study share the looks where their rows agree."""
    seen: dict[tuple, Mapping[str, RowTest | None]] = {}

    def kept(look: int, row_seeds: Mapping[str, int]) -> Mapping[str, RowTest | None]:
        key = (look, *sorted(row_seeds.items()))
        if key not in seen:
            seen[key] = judge(look, row_seeds)
        return seen[key]

    return kept


def _reject(plan: Plan, rows: dict[str, Row], maximize: bool) -> None:
    """Holm's graph over group-sequential tests (Maurer & Bretz 2013): reject any row whose p at some
    look it ran crosses the boundary at its current level; hand its level on; repeat."""
    while True:
        alive = [r for r in rows.values() if r.status not in ("better", "worse")]
        if not alive:
            return
        level = plan.alpha / len(alive)  # Holm's graph: a rejected row's level shared equally by the rest
        crossed = None
        nominal = plan.nominal(level)
        for r in alive:
            r.level = level
            if r.status in ("futility", "within"):
                continue  # non-binding futility: it keeps its share, and is never rejected after stopping
            for j, t in enumerate(r.tests):
                if t is not None and t.p == t.p and t.p <= nominal[j]:
                    crossed = (r, j, t)
                    break
            if crossed:
                break
        if crossed is None:
            return
        r, j, t = crossed
        r.status = "better" if (t.delta > 0) == maximize else "worse"
        r.decided_at = j  # a re-read earlier look: the seeds it trained since stay trained (and counted)
        r.spent = plan.spent(level, r.looks_run - 1)


def replay(plan: Plan, names: Sequence[str], judge: Judge, looks_done: int, maximize: bool = True) -> State:
    """The rows' states after the first ``looks_done`` looks, re-deciding each look in order: look k's
    seeds go to the rows still open after look k-1, ``judge(k, {row: seeds})`` tests them (every row
    with its own seeds: a stopped row keeps the seeds of its last look, as its trials do), and the
    rows are rejected (Holm over the spent level) or stopped for futility. A pure function of the
    judge's answers: a relaunch, the report and the simulation all get the same states."""
    rows = {n: Row(n, level=plan.alpha / max(len(names), 1)) for n in names}
    done = 0
    for k in range(min(looks_done, len(plan.looks))):
        live = [r for r in rows.values() if r.status == "open"]
        if not live:
            break
        for r in live:
            r.looks_run, r.seeds = k + 1, plan.looks[k]
        tests = judge(k, {n: r.seeds for n, r in rows.items()})
        for r in live:
            t = tests.get(r.name)
            r.tests.append(t)
            r.p = t.p if t is not None else float("nan")
        _reject(plan, rows, maximize)
        last = k == len(plan.looks) - 1
        for r in rows.values():
            if r.status != "open" or r.looks_run != k + 1:
                continue
            r.spent = plan.spent(r.level, k)
            t = r.tests[-1]
            if last:
                r.status = "max_seeds"
            elif plan.futility and k >= 1 and t is not None and t.p == t.p:  # not at the first look (point 3)
                r.power = conditional_power(t, plan, r.level)
                if r.power < plan.futility_power:
                    r.status = "futility"
                elif within(t, plan):
                    r.status = "within"
        done = k + 1
    return State(plan, rows, done)


def fixed_verdicts(tests: Mapping[str, RowTest | None], alpha: float = ALPHA) -> dict[str, bool]:
    """The fixed design's decisions: Holm across the rows at ``alpha`` (the report's verdict)."""
    names = [n for n, t in tests.items() if t is not None and t.p == t.p]
    ps = np.array([tests[n].p for n in names])  # type: ignore[union-attr]
    out = {n: False for n in tests}
    order = np.argsort(ps, kind="stable")
    for rank, i in enumerate(order):
        if ps[i] > alpha / (len(names) - rank):
            break
        out[names[i]] = True
    return out


def z_judge(plan: Plan, rows: Sequence[str], drift: Sequence[float], rng: np.random.Generator) -> Judge:
    """A judge on the canonical distribution: row i's z at seeds n is a Brownian motion with drift
    ``drift[i]`` (its z at the maximum seeds' expectation) read at n / max seeds, and its Δ is in units
    of its se at the maximum seeds (seed variance only: information grows with seeds)."""
    frac = np.asarray(plan.fractions)
    steps = rng.standard_normal((len(rows), len(frac))) * np.sqrt(np.diff([0.0, *frac]))
    score = np.cumsum(steps, 1) + np.outer(drift, frac)  # S(t) ~ N(drift t, t), independent increments
    where = {n: i for i, n in enumerate(rows)}

    def judge(look: int, seeds: Mapping[str, int]) -> dict[str, RowTest | None]:
        out: dict[str, RowTest | None] = {}
        for n, s in seeds.items():
            j = plan.looks.index(s)
            se = 1.0 / np.sqrt(frac[j])
            out[n] = RowTest(float(score[where[n], j] / frac[j]), float(se), 0.0, 1e6, s)
        return out
    return judge


def expected_trainings(plan: Plan, rows: int, effect_rows: int = 0, studies: int = 400,
                       seed: int = 0) -> dict[str, float]:
    """Trainings a study of ``rows`` rows plus the baseline uses, on average, when ``effect_rows`` of
    them carry |Δ| = min_effect and the rest none, assuming min_effect is what the maximum seeds
    detect with 80 % power at Holm's first level (alpha / rows) and z statistics (``z_judge``): a quick
    simulation of the procedure itself (``replay``). Also the share of studies with a false verdict."""
    rng = np.random.default_rng(seed)
    drift = float(-special.ndtri(plan.alpha / rows / 2) + special.ndtri(0.80))  # z at max seeds under min_effect
    scaled = Plan(plan.looks, drift, plan.futility_power, plan.alpha, plan.spending, plan.futility)
    names = [f"r{i}" for i in range(rows)]
    total, wrong = 0.0, 0
    for _ in range(studies):
        state = replay(scaled, names, z_judge(scaled, names, [drift] * effect_rows + [0.0] * (rows - effect_rows),
                                              rng), len(plan.looks))
        total += state.trainings()
        wrong += any(r.status in ("better", "worse") for r in list(state.rows.values())[effect_rows:])
    return {"expected": total / studies, "maximum": float((rows + 1) * plan.max_seeds), "fwer": wrong / studies}
