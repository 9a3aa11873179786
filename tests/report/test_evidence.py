"""Every number of the held-out table against a hand computation: per-class F1 and its influence,
the study objective's variants, class groups, estimability, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from fer_core.report import evidence, stats
from fer_core.report.evidence import ReportSettings, Variant, held_out_columns, metric_parts, shot_groups

K = 4
RNG = np.random.default_rng(0)
Y = RNG.integers(0, K, 120)
PREDS = np.where(RNG.random((3, 120)) < 0.6, Y, RNG.integers(0, K, (3, 120)))


def _finite_difference(metric, y, p, h=1e-6):
    """n * d metric / d w_i by perturbing one image's sample weight (sklearn's weighted metric)."""
    base = metric(y, p, None)
    out = np.empty(len(y))
    for i in range(len(y)):
        w = np.ones(len(y))
        w[i] += h
        out[i] = len(y) * (metric(y, p, w) - base) / h
    return base, out


@pytest.mark.parametrize("name,sk", [
    ("macro_f1", lambda y, p, w: f1_score(y, p, labels=range(K), average="macro", zero_division=0, sample_weight=w)),
    ("accuracy", lambda y, p, w: accuracy_score(y, p, sample_weight=w)),
    ("balanced_accuracy", lambda y, p, w: balanced_accuracy_score(y, p, sample_weight=w)),
    ("tail_f1", lambda y, p, w: f1_score(y, p, labels=[2, 3], average="macro", zero_division=0, sample_weight=w)),
])
def test_objective_and_its_influence_match_sklearn(name, sk):
    vals, psi = metric_parts(name, Y, PREDS, K, tail=[2, 3])
    for s in range(len(PREDS)):
        want, infl = _finite_difference(sk, Y, PREDS[s])
        assert vals[s] == pytest.approx(want, abs=1e-12)
        assert psi[s] == pytest.approx(infl, abs=1e-4)
        assert abs(psi[s].mean()) < 1e-9  # an influence function averages to zero


def test_per_class_f1_and_an_absent_class():
    p = PREDS.copy()
    p[p == 3] = 0  # class 3 never predicted: F1 0
    f1, psi = stats.f1_parts(Y, p, K + 1)  # class 4 absent from truth and predictions
    for s in range(len(p)):
        want = f1_score(Y, p[s], labels=range(K + 1), average=None, zero_division=0)
        assert f1[s] == pytest.approx(want, abs=1e-12)
    assert (f1[:, 4] == 0).all() and (psi[..., 4] == 0).all()


def test_shot_groups_follow_the_long_tail_convention():
    g = shot_groups([582, 101, 100, 20, 19, 6], ReportSettings())
    assert g == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    assert shot_groups([582, 50, 6], ReportSettings(many_above=40, few_below=7)) == {
        "many": [0, 1], "medium": [], "few": [2]}
    assert ReportSettings.from_spec({"report": {"few_below": 10}}) == ReportSettings(few_below=10)


def test_held_out_columns_by_hand():
    y = np.repeat(np.arange(K), [40, 40, 36, 4])  # class 3: 4 test images, fewer than 5
    base = np.stack([np.where(RNG.random(len(y)) < 0.5, y, 0) for _ in range(3)])
    better = np.stack([np.where(RNG.random(len(y)) < 0.8, y, 0) for _ in range(3)])
    names = ["a", "b", "c", "d"]
    cols = held_out_columns([Variant("base", ["0", "1", "2"], base), Variant("better", ["2", "0", "1"], better[[2, 0, 1]])],
                            y, "base", "macro_f1", names, {"many": [0, 1], "medium": [2], "few": [3]}, [3],
                            ReportSettings())
    f1 = lambda p: f1_score(y, p, labels=range(K), average="macro", zero_division=0)  # noqa: E731
    fb, fv = np.array([f1(p) for p in base]), np.array([f1(p) for p in better])
    row = cols["better"]
    assert row["test_score"] == pytest.approx(fv.mean()) and cols["base"]["test_score"] == pytest.approx(fb.mean())
    assert row["delta"] == pytest.approx((fv - fb).mean())  # paired by unit, whatever the order
    assert row["p_improve"] == pytest.approx(np.mean(fv > fb))
    assert row["delta_ci_lo"] < row["delta"] < row["delta_ci_hi"]
    assert row["p_holm"] == pytest.approx(row["p_value"])  # one test in the family
    assert row["mde"] > 0 and row["delta_se_seeds"] >= 0 and row["delta_se_images"] >= 0
    # the class groups: macro-F1 over the group's classes
    per_class = lambda p: f1_score(y, p, labels=range(K), average=None, zero_division=0)  # noqa: E731
    g_many = np.mean([per_class(p)[[0, 1]].mean() for p in better])
    assert row["many_f1"] == pytest.approx(g_many)
    # class 3 has 4 test images: not estimable, never a confident number
    assert np.isnan(row["f1_03_d"]) and np.isnan(row["delta_f1_03_d"]) and np.isnan(row["f1_03_d_ci_lo"])
    assert row["f1_00_a"] == pytest.approx(np.mean([per_class(p)[0] for p in better]))
    assert "than the baseline" in evidence.verdict(row, True, 1) or "no detectable" in evidence.verdict(row, True, 1)


def test_a_variant_identical_to_the_baseline_has_a_zero_delta_and_no_verdict_of_difference():
    cols = held_out_columns([Variant("b", ["0", "1"], PREDS[:2]), Variant("same", ["0", "1"], PREDS[:2])], Y, "b",
                            "macro_f1", list("abcd"), {"many": [0, 1, 2, 3], "medium": [], "few": []}, [],
                            ReportSettings())
    row = cols["same"]
    assert row["delta"] == 0 and row["delta_ci_lo"] == row["delta_ci_hi"] == 0 and row["p_value"] == 1.0
    assert evidence.verdict(row, True, 1).startswith("no detectable difference")


def test_one_seed_gives_no_interval():
    e = stats.estimate(np.array([0.5]), np.zeros((1, 10)))
    lo, hi = e.ci()
    assert np.isnan(lo) and np.isnan(hi) and np.isnan(e.p_value)


def test_calibration_by_hand():
    logits = RNG.normal(size=(200, K)) * 2
    y = RNG.integers(0, K, 200)
    probs = stats.softmax(logits)
    got = stats.calibration(logits.astype(np.float32), y)
    assert got["nll"] == pytest.approx(log_loss(y, probs, labels=range(K)), abs=1e-5)
    assert got["brier"] == pytest.approx(((probs - np.eye(K)[y]) ** 2).sum(1).mean(), abs=1e-6)
    conf, hit = probs.max(1), probs.argmax(1) == y
    ece = 0.0
    for b in range(15):
        m = (conf > b / 15) & (conf <= (b + 1) / 15)
        if m.any():
            ece += m.mean() * abs(hit[m].mean() - conf[m].mean())
    assert got["ece"] == pytest.approx(ece, abs=1e-6)
    # a perfectly confident, always right model is perfectly calibrated
    sure = np.eye(K)[y] * 50
    assert stats.calibration(sure, y)["ece"] == pytest.approx(0, abs=1e-9)


def _study_rows(n_variants: int, seeds: int = 3, agree: float = 0.9, seed: int = 1):
    """Labels and variants whose predictions agree with the baseline's on ``agree`` of the images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, 200)
    base = np.where(rng.random((seeds, 200)) < 0.6, y, rng.integers(0, K, (seeds, 200)))
    out = [Variant("base", [str(s) for s in range(seeds)], base)]
    for v in range(n_variants):
        flip = rng.random((seeds, 200)) > agree
        out.append(Variant(f"v{v}", [str(s) for s in range(seeds)],
                           np.where(flip, np.where(rng.random((seeds, 200)) < 0.6, y, rng.integers(0, K, (seeds, 200))),
                                    base)))
    return y, out


def _cols(y, variants, **kw):
    return held_out_columns(variants, y, "base", "macro_f1", list("abcd"), {"many": [0, 1], "medium": [2, 3], "few": []},
                            [], ReportSettings(**kw))


def test_two_rows_identical_to_the_baseline_leave_another_rows_p_within_a_factor_of_two():
    """Reproduction B of issue 34: two rows identical to the baseline (zero seed variance) made the old
    pooled ratio infinite and every row's df 1e6: another row's p fell from 0.074 to 0.0005."""
    y, vs = _study_rows(6)
    before = _cols(y, vs)
    same = [Variant(f"same{i}", vs[0].units, vs[0].preds.copy()) for i in range(2)]
    after = _cols(y, [*vs, *same])
    for v in vs[1:]:
        ratio = after[v.name]["p_value"] / before[v.name]["p_value"]
        assert 0.5 <= ratio <= 2, (v.name, before[v.name]["p_value"], after[v.name]["p_value"])
    row = after["same0"]
    assert row["delta"] == 0 and row["p_value"] == 1 and np.isnan(row["mde"])  # an exact row: MDE n/a, not 0
    assert "MDE n/a" in evidence.verdict(row, True, 8)
    assert np.isfinite(after["v0"]["delta_prior_df"]) and after["v0"]["delta_df"] < 1e5


def test_mde_is_the_effect_detected_with_80_percent_power_by_the_noncentral_t():
    """Reproduction E of issue 34: (t_{1-a/2} + t_power) se gave 67 % power (18 tests, df 2); the MDE now
    solves the noncentral t, so a true Δ of the MDE is detected with 80 % power (at least 78 %)."""
    from scipy import stats as st

    for df, m in ((2, 18), (4, 18), (2, 1), (30, 5)):
        e = stats.Estimate(mean=0.0, se_seeds=0.02, se_images=0.01, df=float(df), n=3)
        a = stats.ALPHA / m
        mde = e.mde(alpha=a)
        crit, nc = st.t.ppf(1 - a / 2, df), mde / float(e.se)
        power = st.nct.sf(crit, df, nc) + np.nan_to_num(st.nct.cdf(-crit, df, nc))  # scipy: NaN deep in the tail
        assert power >= 0.78 and power == pytest.approx(0.80, abs=1e-6)
        # the old formula's MDE is smaller than the one the design can detect
        assert (st.t.ppf(1 - a / 2, df) + st.t.ppf(0.8, df)) * float(e.se) < mde


def test_unequal_seed_variances_survive_moderation():
    """Each row's seed variance is shrunk toward the prior, not replaced by it: a row whose seeds spread
    6x more keeps a larger seed SE; the prior's df and sd are reported."""
    rng = np.random.default_rng(3)
    rows = [stats.estimate(rng.normal(0, sd, 3), np.zeros((3, 5)), units=["0", "1", "2"])
            for sd in [0.01] * 8 + [0.06] * 2]
    mod = stats.moderate(rows)
    small = np.median([float(r.se_seeds) for r in mod[:8]])
    assert float(mod[8].se_seeds) > 2 * small and float(mod[9].se_seeds) > 2 * small
    assert all(float(r.df) >= 2 for r in mod)
    assert all(float(r.d0) == float(mod[0].d0) for r in mod) and float(mod[0].s0) > 0


def test_a_primary_family_is_tested_apart_from_the_secondary_one():
    y, vs = _study_rows(5, agree=0.8)
    cols = _cols(y, vs, primary=("v0", "v1"))
    assert cols["v0"]["holm_family"] == "primary" and cols["v0"]["holm_family_size"] == 2
    assert cols["v3"]["holm_family"] == "secondary" and cols["v3"]["holm_family_size"] == 3
    prim = [cols[v]["p_value"] for v in ("v0", "v1")]
    assert [cols[v]["p_holm"] for v in ("v0", "v1")] == pytest.approx(stats.holm(prim))
    assert "primary tests" in evidence.verdict(cols["v0"], True, 5)
    with pytest.raises(evidence.FerError, match=r"report\.primary: 'nope' is not a variant"):
        _cols(y, vs, primary=("nope",))


def test_a_row_without_a_delta_says_why():
    y, vs = _study_rows(2)
    lone = Variant("lone", ["7", "8"], vs[1].preds[:2])
    row = _cols(y, [*vs, lone])["lone"]
    assert "no seed in common with the baseline" in evidence.verdict(row, True, 2)
    short = Variant("short", ["0", "1"], vs[1].preds[:2])
    row = _cols(y, [*vs, short])["short"]
    assert "Δ over the 2 seeds shared with the baseline" in evidence.verdict(row, True, 3)
    assert "won " in evidence.verdict(row, True, 3) and "seed pairs" in evidence.verdict(row, True, 3)


def test_group_delta_uses_estimable_classes_only():
    y = np.repeat(np.arange(K), [60, 60, 60, 3])  # class 3: 3 test images, not estimable
    rng = np.random.default_rng(5)
    base = np.where(rng.random((3, len(y))) < 0.6, y, 0)
    var = np.where(rng.random((3, len(y))) < 0.7, y, 0)
    cols = held_out_columns([Variant("base", ["0", "1", "2"], base), Variant("v", ["0", "1", "2"], var)], y, "base",
                            "macro_f1", list("abcd"), {"many": [0, 1], "medium": [2], "few": [3]}, [],
                            ReportSettings())
    row = cols["v"]
    assert np.isnan(row["few_delta"]) and np.isnan(row["few_f1"])  # its only class is not estimable
    assert np.isnan(row["delta_f1_03_d"])


def test_a_primary_list_in_the_study_file_is_checked(tmp_path):
    from fer_core.errors import ConfigError
    from fer_core.study.spec import load_study

    (tmp_path / "p.yaml").write_text("""
name: prim
question: q
data: {dataset: synthetic}
base: {backbone: test_resnet, img_size: 48, epochs: 1, warmup_epochs: 0}
seeds: [0]
report: {primary: [focal, nope]}
design: {kind: one_at_a_time, baseline: plain, variants: {focal: {loss: focal}, cb: {loss: class_balanced}}}
""")
    with pytest.raises(ConfigError) as exc:
        load_study(str(tmp_path / "p.yaml"), "smoke")
    assert "report.primary: 'nope' is not a variant; allowed: focal, cb" in str(exc.value)
    assert "\n" not in str(exc.value)
