"""Adequate before significant (fer_core/report/adequacy.py): the convergence rule on curves with a known
plateau, the chance level against a simulated prior-sampling classifier, and what the report does with
rows that fail (no verdict, out of the Holm family, said first) and with classes no model predicts
(not estimable, never a zero-width interval)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_core.cli import main
from fer_core.report import adequacy
from fer_core.report.adequacy import RULE, chance_level, curve_converged, judged_curve
from fer_core.report.export import load
from fer_core.report.table import build_table, group_frame, markdown, per_class_frame

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _curves(rng, n: int, tau: float, sigma: float, reps: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(n)
    return 0.05 + amp * (1 - np.exp(-(t + 1) / tau)) + rng.normal(0, sigma, (reps, n))


@pytest.mark.parametrize("n", [8, 20, 40])
@pytest.mark.parametrize("sigma", [0.002, 0.01, 0.03])
def test_a_plateau_is_converged_and_a_rise_well_above_the_noise_is_not(n, sigma):
    rng = np.random.default_rng(n * 1000 + int(sigma * 1e4))
    # plateau: 95 % of the rise done by 30 % of the schedule
    plateau = np.mean([curve_converged(c, n)[0] for c in _curves(rng, n, n / 10, sigma, 300)])
    assert plateau >= 0.95, plateau  # per-seed false alarm <= 5 %; a row needs most of its seeds rising
    # still rising: the last quarter adds ~8 noise SDs (a linear rise of the whole amplitude)
    t = np.arange(n)
    slope = 8 * max(sigma, RULE.noise_floor) / np.ceil(n / 4)
    rising = 0.05 + slope * t + rng.normal(0, sigma, (300, n))
    caught = np.mean([not curve_converged(c, n)[0] for c in rising])
    assert caught >= 0.9, caught


def test_the_rule_needs_the_best_epoch_late_and_a_significant_gain():
    # rising strongly, but the selected epoch was early (a spike): not "still rising"
    y = np.r_[0.5, np.linspace(0.1, 0.4, 19)]
    assert curve_converged(y, 20)[0]
    # minimize: a falling loss curve is the rising one
    assert not curve_converged(-np.linspace(0.1, 0.5, 20), 20, maximize=False)[0]
    ok, why = curve_converged([0.1, 0.2], 2)
    assert not ok and why["too_short"]  # 2 epochs cannot show a plateau
    ok, why = curve_converged([0.1, 0.2, 0.3, 0.3, 0.3], 10)
    assert ok and why["stopped_early"]  # early stopping saw the plateau


def test_the_judged_curve_is_stage_one_before_a_deferred_switch():
    curve = {e: float(e) for e in range(12)}
    assert judged_curve(curve, {"epochs": 10, "stage2": "crt", "stage2_epochs": 2}) == ([float(e) for e in range(10)], 10)
    vals, n = judged_curve(curve, {"epochs": 10, "defer_start": 0.8, "defer_sampler": "balanced"})
    assert n == 8 and vals == [float(e) for e in range(8)]


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy", "balanced_accuracy"])
def test_chance_is_what_a_classifier_sampling_the_training_priors_scores(metric):
    from fer_core.report.evidence import metric_parts

    counts = [582, 394, 171, 71, 24, 6]
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), [200, 150, 60, 25, 8, 4])
    prior = np.asarray(counts) / sum(counts)
    preds = rng.choice(6, size=(400, len(labels)), p=prior)
    simulated = float(metric_parts(metric, labels, preds, 6)[0].mean())
    assert chance_level(metric, counts, labels) == pytest.approx(simulated, abs=0.01)


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory):
    d = tmp_path_factory.mktemp("adequacy")
    shutil.copy(FIXTURES / "report-fixture.db", d / "report-fixture.db")
    url = f"sqlite:///{d / 'report-fixture.db'}"
    out = d / "out"
    assert main(["report", "report-fixture", "--storage", url, "--format", "all", "--out", str(out), "--quiet"]) == 0
    return url, out


def test_rows_whose_trainings_still_rise_get_no_verdict_and_leave_the_holm_family(fixture_report):
    # the fixture trains the digits 8 epochs (the twin needs 40): its variants' curves still rise
    _, out = fixture_report
    csv = pd.read_csv(out / "report.csv")
    trained = csv[(csv["derived"].isna()) & ~csv["baseline"]]
    assert len(trained) == 2 and not trained["adequate"].any()
    assert trained["adequacy"].str.match(r"not_converged \d/2").all()
    assert trained["verdict"].str.startswith("not answerable at this budget: validation macro_f1 still rising").all()
    assert trained["p_holm"].isna().all() and trained["p_value"].notna().all()  # tested, but outside the family
    assert not csv["verdict"].str.contains("better|worse").any()
    md = (out / "report.md").read_text().splitlines()
    first = next(ln for ln in md if ln and not ln.startswith("#"))
    assert first.startswith("**Adequacy: this study cannot answer its question at this budget for 2 of 2 compared rows**")
    assert "train longer (--set epochs=16)" in first
    assert "one Holm family of 0 tests (the rows that pass the adequacy check; 2 not answerable left out)" in \
        "\n".join(md)
    tex, page = (out / "report.tex").read_text(), (out / "report.html").read_text()
    assert tex.startswith("% Adequacy: this study cannot answer")
    assert page.index("Adequacy: this study cannot answer") < page.index("<dt>Question</dt>")


def test_a_converged_study_can_answer_and_keeps_its_verdicts(fixture_report, monkeypatch):
    url, _ = fixture_report
    monkeypatch.setattr(adequacy, "curve_converged", lambda *a, **k: (True, {}))
    _, data, table = load("report-fixture", url)
    assert table["adequate"].all() and (table["adequacy"] == "").all()
    trained = table[(table["derived"] == "") & ~table["baseline"]]
    assert trained["p_holm"].notna().all()
    assert not trained["verdict"].str.startswith("not answerable").any()
    assert markdown(data, table).split("\n")[2].startswith("**Adequacy: this study can answer its question**")


def test_a_class_no_model_predicts_is_not_estimable_never_a_zero_width_interval(fixture_report):
    url, _ = fixture_report
    _, data, _ = load("report-fixture", url)
    # no trial predicts the three rarest digits (few-shot), as short trainings on RAF-CE never predict its tail
    few = data.groups["few"]
    rare = few[-3:]
    for key, h in data.heldout.items():
        pred = h.pred.copy()
        pred[np.isin(pred, rare)] = 0
        data.heldout[key] = h._replace(pred=pred)
    table = build_table(data)
    delta = per_class_frame(data, table, delta=True)
    col = next(c for c in delta.columns if c.startswith(f"{rare[0]} "))
    assert (delta[col] == "n.p.").all()
    absolute = per_class_frame(data, table)
    trained_rows = ~absolute["variant"].str.contains(" +", regex=False)  # TTA rows: their own stored metrics
    assert (absolute.loc[trained_rows, col] == "0 (n.p.)").all()
    for r in table[table["derived"] == ""].to_dict("records"):
        for c in rare:
            name = f"f1_{c:02d}_{data.class_names[c].replace(' ', '_')}"
            assert r[f"{name}_ci_lo"] != r[f"{name}_ci_lo"]  # no interval
            if not r["baseline"]:
                assert r[f"delta_{name}"] != r[f"delta_{name}"]
    # now the whole few-shot group: its Δ is "not estimable: never predicted" and the rows fail
    for key, h in data.heldout.items():
        pred = h.pred.copy()
        pred[np.isin(pred, few)] = 0
        data.heldout[key] = h._replace(pred=pred)
    table = build_table(data)
    groups = group_frame(data, table)
    few_delta = next(c for c in groups.columns if c.startswith("few-shot") and c.endswith("Δ"))
    trained = ~table.loc[table["derived"].isin(["", "posthoc"]) & table["variant"].isin(groups["variant"]),
                         "baseline"].to_numpy()
    assert (groups.loc[trained, few_delta] == adequacy.NEVER).all()
    assert table.loc[(table["derived"] == "") & ~table["baseline"], "adequacy"].str.contains(
        "group_unlearnt few").all()
    assert "+0.000 [0.000, 0.000]" not in groups.to_string()
