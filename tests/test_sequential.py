"""The sequential design's pure statistics (``fer_core/sequential.py``) on the canonical distribution:
the boundaries spend what the spending function says, Holm's graph hands a rejected row's level on,
futility stops, and a replay is a pure function of the judge's answers. The report-level simulation
(the report's own statistics on simulated studies) is ``tests/report/test_sequential_simulation.py``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from scipy import stats

from fer_core import sequential
from fer_core.sequential import Plan, RowTest

LOOKS = (3, 5, 8, 12)


def canonical(rng: np.random.Generator, draws: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Z statistics (draws, looks) under the null: a Brownian motion read at the fractions."""
    steps = rng.standard_normal((draws, len(fractions))) * np.sqrt(np.diff([0.0, *fractions]))
    return np.cumsum(steps, 1) / np.sqrt(fractions)


@pytest.mark.parametrize("alpha", [0.05, 0.05 / 18])
def test_the_boundaries_spend_the_lan_demets_obrien_fleming_function_look_by_look(alpha):
    plan = Plan(LOOKS, 0.02)
    c = np.array(sequential.boundaries(plan.fractions, alpha))
    assert np.all(np.diff(c) < 0)  # O'Brien-Fleming: strict early, near the fixed level at the end
    z = np.abs(canonical(np.random.default_rng(0), 400_000, plan.fractions))
    crossed = np.maximum.accumulate(z >= c, axis=1).mean(0)  # cumulative share crossed by each look
    want = [sequential.spending(t, alpha) for t in plan.fractions]
    se = np.sqrt(np.array(want) * (1 - np.array(want)) / len(z))
    assert np.all(np.abs(crossed - want) <= 4 * se + 1e-5), (crossed, want)
    assert want[-1] == pytest.approx(alpha)
    assert plan.nominal(alpha)[-1] < alpha  # the last look pays a little for the interim looks


def test_the_nominal_level_at_every_look_spends_far_more_than_alpha():
    plan = Plan(LOOKS, 0.02, spending="nominal")
    c = np.array(sequential.boundaries(plan.fractions, 0.05, "nominal"))
    z = np.abs(canonical(np.random.default_rng(1), 200_000, plan.fractions))
    assert (z >= c).any(1).mean() > 0.10  # four looks at 0.05 each: about 0.13, not 0.05


def test_holm_over_the_spent_levels_keeps_the_family_wise_error_and_the_nominal_level_does_not():
    """18 null rows, 4 looks, no futility stops (the worst case): the whole procedure (``replay``)."""
    kept = sequential.expected_trainings(Plan(LOOKS, 0.02, futility=False), rows=18, studies=STUDIES, seed=5)
    broken = sequential.expected_trainings(Plan(LOOKS, 0.02, spending="nominal", futility=False), rows=18,
                                           studies=STUDIES, seed=5)
    bound = 0.05 + 2 * np.sqrt(0.05 * 0.95 / STUDIES)
    assert kept["fwer"] <= bound, kept
    assert broken["fwer"] > bound + 0.02, broken  # about 0.12: each row has four chances at alpha / 18


STUDIES = 400


def fixed_judge(tests: Mapping[str, list[RowTest]]) -> sequential.Judge:
    return lambda look, seeds: {n: t[look] for n, t in tests.items()}


def t(delta: float, se: float, n: int = 3) -> RowTest:
    return RowTest(delta, se, 0.0, 1e6, n)


def test_a_rejection_hands_its_level_on_and_earlier_looks_are_read_again():
    plan = Plan(LOOKS, 0.5, futility=False)
    lo, hi = plan.nominal(0.05 / 2), plan.nominal(0.05)
    # row b's look-1 z sits between the boundary at alpha/2 and the one at alpha: it is rejected only
    # once row a (crossing at look 2) hands its half of the level on
    zb = float(stats.norm.isf((lo[0] + hi[0]) / 4))
    za = float(stats.norm.isf(lo[1] / 4))
    tests = {"a": [t(0.0, 1.0), t(za, 1.0), t(za, 1.0), t(za, 1.0)],
             "b": [t(zb, 1.0), t(0.0, 1.0), t(0.0, 1.0), t(0.0, 1.0)]}
    one = sequential.replay(plan, ["a", "b"], fixed_judge(tests), 1)
    assert one.rows["b"].status == "open" and one.rows["b"].level == pytest.approx(0.025)
    two = sequential.replay(plan, ["a", "b"], fixed_judge(tests), 2)
    assert two.rows["a"].status == "better" and two.rows["a"].decided_at == 1
    assert two.rows["b"].status == "better" and two.rows["b"].decided_at == 0
    assert two.rows["b"].level == pytest.approx(0.05)
    assert two.finished and two.next_seeds() == {}
    assert two.seeds_used() == {"": 5, "a": 5, "b": 5}  # b's second look was trained before it was re-read


def test_futility_stops_a_row_that_could_not_detect_min_effect_and_keeps_the_others():
    plan = Plan(LOOKS, min_effect=0.01)
    tests = {"flat": [t(0.0, 0.05)] * 4,  # se 0.05 at 3 seeds: 0.01 is far below what 12 seeds detect
             "exact": [t(0.0, 0.0)] * 4,  # identical to the baseline: more seeds change nothing
             "promising": [t(0.1, 0.05)] * 4}
    plan_big = Plan(LOOKS, min_effect=0.08)  # 12 seeds would detect it, and 3 cannot rule it out
    first = sequential.replay(plan, list(tests), fixed_judge(tests), 1)
    assert first.open == list(tests)  # no futility stop at the first look (too few seeds to call it)
    state = sequential.replay(plan, list(tests), fixed_judge(tests), 2)
    assert state.rows["flat"].status == "futility" and state.rows["flat"].power < 0.2
    assert state.rows["exact"].status == "futility" and state.rows["exact"].seeds == 5
    big = sequential.replay(plan_big, list(tests), fixed_judge(tests), 2)
    assert big.rows["flat"].status == "open" and big.rows["flat"].power > 0.2
    assert big.next_seeds() == {"": 8, "flat": 8, "promising": 8}
    assert big.trainings() == 4 * 5 and big.fixed_trainings() == 4 * 12


def test_a_replay_is_a_function_of_the_judges_answers_and_asks_only_for_open_rows():
    rng = np.random.default_rng(3)
    names = [f"r{i}" for i in range(6)]
    answers = {n: [t(float(rng.normal(0, 0.05)), 0.05 / np.sqrt(k + 1)) for k in range(4)] for n in names}
    asked: list[dict] = []

    def judge(look: int, seeds: Mapping[str, int]) -> dict:
        asked.append(dict(seeds))
        return {n: answers[n][look] for n in seeds}

    plan = Plan(LOOKS, 0.1)
    a = sequential.replay(plan, names, judge, 4)
    b = sequential.replay(plan, names, judge, 4)
    assert [(r.status, r.seeds) for r in a.rows.values()] == [(r.status, r.seeds) for r in b.rows.values()]
    for seeds in asked:  # a stopped row keeps the seeds of its last look
        assert set(seeds.values()) <= set(LOOKS)
    assert a.trainings() <= a.fixed_trainings()


def test_the_expected_trainings_fall_below_the_maximum_and_rise_with_real_effects():
    plan = Plan(LOOKS, 0.02)
    null = sequential.expected_trainings(plan, rows=6, effect_rows=0, studies=200)
    some = sequential.expected_trainings(plan, rows=6, effect_rows=6, studies=200)
    assert null["maximum"] == 7 * 12
    assert null["expected"] < 0.8 * null["maximum"]
    assert null["expected"] < some["expected"] <= some["maximum"]
