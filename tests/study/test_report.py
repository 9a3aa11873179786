"""`fer-study report` and `fer-study dashboard` on a real launched study: every report format with its
numbers checked by hand from the storage, and the dashboard in a real browser (Debian's Chromium,
headless, driven by Playwright)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import fer_cli, launch_chromium, running_dashboard
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from scipy import stats as sps
from sklearn.metrics import f1_score

from fer_core.report import stats
from fer_core.report.export import refresh_note
from fer_core.study.artifacts import open_store
from fer_core.study.outputs import read_probabilities, unpack_classes
from fer_core.study.runner import LaunchOptions, launch

STUDY = """
# report-test: a tiny one-at-a-time study with two seeds, so deltas can be paired.
#   fer-study launch report-test.yaml --profile smoke
name: report-test
question: Does the report pair variants with the baseline by seed?
data: {dataset: synthetic}
base: {backbone: test_resnet, img_size: 48, epochs: 2, warmup_epochs: 0, batch_size: 32}
seeds: [0, 1]
design:
  kind: one_at_a_time
  baseline: plain-ce
  variants:
    balanced_softmax: {loss: balanced_softmax}
    sampler_sqrt: {sampler: sqrt}
budget: {max_concurrent: 2}
"""
VARIANTS = ["plain-ce", "balanced_softmax", "sampler_sqrt"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, cache_dir, ray_local):
    d = tmp_path_factory.mktemp("report")
    (d / "report-test.yaml").write_text(STUDY)
    url = f"sqlite:///{d / 'fer-study.db'}"
    out = launch(str(d / "report-test.yaml"), LaunchOptions(storage=url, profile="smoke", show_progress=False,
                                                         runs_dir=str(d / "runs"), note=refresh_note))
    assert out["COMPLETE"] == 6
    return d, url


def _db_digest(d: Path) -> str:
    return hashlib.sha256((d / "fer-study.db").read_bytes()).hexdigest()


def _hand_parts(runs, k, base=None):
    """(mean, seed variance part, test-set part, n) by hand: the per-seed scores' variance, and the
    test set's part from influences obtained by finite differences of sklearn's weighted F1."""

    def score_and_influence(y, p):
        n, h = len(y), 1e-6
        f = f1_score(y, p, labels=range(k), average="macro", zero_division=0)
        cells = {}
        infl = np.empty(n)
        for i in range(n):  # an image's influence depends only on its (label, prediction) cell
            key = (y[i], p[i])
            if key not in cells:
                w = np.ones(n)
                w[i] += h
                cells[key] = n * (f1_score(y, p, labels=range(k), average="macro", zero_division=0,
                                           sample_weight=w) - f) / h
            infl[i] = cells[key]
        return f, infl

    d, psi = zip(*(score_and_influence(y, p) for y, p in runs))
    d, psi = np.array(d), np.array(psi)
    if base is not None:
        db, psib = zip(*(score_and_influence(y, p) for y, p in base))
        d, psi = d - np.array(db), psi - np.array(psib)
    n, big_n = len(d), psi.shape[1]
    v_mean = (psi.mean(0) ** 2).sum() / big_n**2
    v_bar = (psi**2).sum(1).mean() / big_n**2
    return d.mean(), d.var(ddof=1) / n, max(v_mean - max(v_bar - v_mean, 0) / (n - 1), 0), n


def _hand_intervals(parts, rows, prefix):
    """95 % t-intervals and p-values from the hand-computed parts: the image part (the delta method, never
    moderated) must be the row's own, and the interval and p follow from the row's seed part (moderated
    across the rows, fer_core/report/stats.py) and its Welch-Satterthwaite df with Student's t."""
    out = []
    for (mean, _v_seed, v_img, _n), row in zip(parts, rows):
        assert row[f"{prefix}_se_images"] ** 2 == pytest.approx(v_img, rel=1e-3, abs=1e-9)
        se, df = np.sqrt(row[f"{prefix}_se_seeds"] ** 2 + v_img), row[f"{prefix}_df"]
        q = sps.t.ppf(0.975, df)
        out.append((mean - q * se, mean + q * se, 2 * sps.t.sf(abs(mean) / se, df)))
    return out


def test_trials_carry_artifacts_and_the_study_note(launched):
    d, url = launched
    study = optuna.load_study(study_name="report-test", storage=url)
    assert (d / "fer-study-artifacts").is_dir()  # beside the SQLite file by default
    # recorded, so report/ensemble/dashboard find it without --artifacts (issue 19)
    assert study.user_attrs["artifact_store"] == str((d / "fer-study-artifacts").resolve())
    assert study.metric_names == ["macro_f1"]  # the dashboard names the objective
    for t in study.get_trials():
        assert len(t.user_attrs["train_loss"]) == t.user_attrs["epochs_run"]  # the curves' loss panel
    for t in study.get_trials():
        names = sorted(m.filename for m in get_all_artifact_meta(t, storage=study._storage))
        assert names == ["confusion_matrix.png", "per_class_report.json", "predictions.json", "probabilities.npz"]
    import optuna_dashboard

    note = optuna_dashboard.get_note(study)
    assert "| variant" in note and all(v in note for v in VARIANTS) and "6 complete" in note
    assert "cannot hide parameter importance" in note  # said, for a designed study, rather than patched
    for t in study.get_trials():  # the variant and rounded values, for the dashboard's trial views
        v = t.user_attrs["val_metrics"]["macro_f1"]
        assert t.user_attrs["summary"] == (f"{t.user_attrs['variant']}, seed {t.user_attrs['seed']}: validation "
                                           f"macro_f1 {v:.4f}, test {t.user_attrs['test_macro_f1']:.4f}")


def test_report_every_format_matches_a_hand_computation(launched, tmp_path):
    d, url = launched
    before = _db_digest(d)
    out = tmp_path / "rep"
    proc = fer_cli("report", "report-test", "--storage", url, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _db_digest(d) == before  # the report only reads

    # hand computation straight from the storage: the held-out (test) predictions of every trial
    study = optuna.load_study(study_name="report-test", storage=url)
    vals, test = {v: {} for v in VARIANTS}, {v: {} for v in VARIANTS}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        vals[t.user_attrs["variant"]][t.user_attrs["seed"]] = t.value
        packed = t.user_attrs["predictions_packed"]["test"]
        test[t.user_attrs["variant"]][t.user_attrs["seed"]] = (unpack_classes(packed["labels"]),
                                                                unpack_classes(packed["pred"]))
    table = pd.read_csv(out / "report.csv")
    # each variant is followed by its post-hoc rows (derived, paired with it: tests/report/test_posthoc_rows.py)
    assert table.loc[table["derived"].notna(), "variant"].tolist() == [
        f"{v} +posthoc:{m}" for v in VARIANTS for m in ("logit_adjust", "tau_norm")]
    table = table[table["derived"].isna()]
    assert list(table["variant"]) == VARIANTS  # baseline first, then the spec's order
    k = len(study.user_attrs["class_names"])
    pvals = []
    runs = {v: [test[v][s] for s in (0, 1)] for v in VARIANTS}
    rows = {r["variant"]: r for r in table.to_dict("records")}
    means = dict(zip(VARIANTS, _hand_intervals([_hand_parts(runs[v], k) for v in VARIANTS],
                                               [rows[v] for v in VARIANTS], "test_score")))
    deltas = dict(zip(VARIANTS[1:], _hand_intervals([_hand_parts(runs[v], k, runs["plain-ce"]) for v in VARIANTS[1:]],
                                                    [rows[v] for v in VARIANTS[1:]], "delta")))
    for row in table.to_dict("records"):
        v = np.array([vals[row["variant"]][s] for s in (0, 1)])
        assert row["n_seeds"] == 2 and row["n_pruned"] == 0 and row["n_failed"] == 0
        assert row["val_macro_f1_mean"] == pytest.approx(v.mean(), abs=1e-12)  # the selection split, kept
        assert row["val_macro_f1_sd"] == pytest.approx(v.std(ddof=1), abs=1e-12)
        f1s = np.array([f1_score(*runs[row["variant"]][s], labels=range(k), average="macro", zero_division=0)
                        for s in (0, 1)])
        assert row["test_score"] == pytest.approx(f1s.mean(), abs=1e-12)  # the objective on the test split
        lo, hi, _ = means[row["variant"]]  # a score's interval stops at the range a score can take
        assert (row["test_score_ci_lo"], row["test_score_ci_hi"]) == pytest.approx((max(lo, 0), min(hi, 1)), abs=1e-4)
        if row["variant"] != "plain-ce":
            f1b = np.array([f1_score(*runs["plain-ce"][s], labels=range(k), average="macro", zero_division=0)
                            for s in (0, 1)])
            assert row["delta"] == pytest.approx((f1s - f1b).mean(), abs=1e-12)
            lo, hi, p = deltas[row["variant"]]
            assert (row["delta_ci_lo"], row["delta_ci_hi"]) == pytest.approx((max(lo, -1), min(hi, 1)), abs=1e-4)
            assert row["p_value"] == pytest.approx(p, abs=1e-3)
            assert row["p_improve"] == pytest.approx(np.mean((f1s > f1b) + 0.5 * (f1s == f1b)))
            pvals.append(row["p_value"])
            # 2 epochs cannot show a plateau (fer_core/report/adequacy.py): no row may read better/worse
            assert not row["adequate"] and row["adequacy"].startswith("not_converged 2/2; baseline_not_converged 2/2")
            assert row["verdict"].startswith("not answerable at this budget: validation macro_f1 still rising")
    assert table["p_holm"].isna().all()  # the not-answerable rows leave the Holm family: it is empty
    first = next(ln for ln in (out / "report.md").read_text().splitlines() if ln and not ln.startswith("#"))
    assert first.startswith("**Adequacy: this study cannot answer its question at this budget for 2 of 2 compared rows**: "
                            "validation macro_f1 still rising at the end in 6 of 6 trials")
    assert table["best"].sum() == 1  # the star is validation's pick
    assert table.loc[table["best"], "val_macro_f1_mean"].item() == table["val_macro_f1_mean"].max()
    # a class with fewer than 5 test images is not estimable: no number, rather than a confident 0.00
    labels = test["plain-ce"][0][0]
    support = np.bincount(labels, minlength=k)
    names = study.user_attrs["class_names"]
    for c in range(k):
        col = f"f1_{c:02d}_{names[c].replace(' ', '_')}"
        assert np.isnan(table[col]).all() == (support[c] < 5), (c, support[c])
    # calibration from the stored float32 logits, ECE by hand (15 equal-width bins, top label)
    store = open_store(d / "fer-study-artifacts", create=False)
    t0 = min(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    stored = read_probabilities(store, study._storage, t0)
    assert stored["test_logits"].dtype == np.float32
    probs, y = stored["test_probs"].astype(float), stored["test_labels"]
    conf, hit = probs.max(1), (probs.argmax(1) == y)
    ece = sum(abs(hit[m].mean() - conf[m].mean()) * m.mean()
              for b in range(15) if (m := (conf > b / 15) & (conf <= (b + 1) / 15)).any())
    same = table[table["variant"] == t0.user_attrs["variant"]]
    assert np.isfinite(same["ece"]).all() and 0 <= ece <= 1
    from fer_core.report.stats import calibration
    assert calibration(stored["test_logits"], y)["ece"] == pytest.approx(ece, abs=1e-5)

    md = (out / "report.md").read_text()
    assert "plain-ce" in md and "★ " in md and "6 complete" in md and "Holm" in md and "test macro_f1" in md
    assert "Per-class test F1" in md and "n.e." in md and "Design: 3 variants x 2 seeds" in md
    assert "\\toprule" in (out / "report.tex").read_text() and "\\bottomrule" in (out / "report.tex").read_text()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "src=\"http" not in page  # self-contained
    for png in ("per_class_f1_heatmap.png", "delta_forest.png", "best_confusion_matrix.png", "learning_curves.png",
                "reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 6 and set(trials["state"]) == {"COMPLETE"}
    assert "| balanced_softmax" in proc.stdout  # the table is printed too


def test_pruned_failed_and_running_trials_are_counted_not_averaged(launched, tmp_path):
    d, _url = launched
    shutil.copy(d / "fer-study.db", tmp_path / "fer-study.db")
    url2 = f"sqlite:///{tmp_path / 'fer-study.db'}"
    study = optuna.load_study(study_name="report-test", storage=url2)
    template = next(t for t in study.get_trials() if t.user_attrs["variant"] == "sampler_sqrt")
    for state in (TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
        t = study.ask(template.distributions)
        for k in ("variant", "seed", "cell_id"):
            t.set_user_attr(k, template.user_attrs[k])
        t.report(0.99, 0)  # a high value that would move the mean if it were averaged in
        if state != TrialState.RUNNING:
            study.tell(t, state=state)
    before = pd.read_csv(_report_study("report-test", url2, tmp_path / "a", str(d / "fer-study-artifacts"))
                         / "report.csv")
    row = before.set_index("variant").loc["sampler_sqrt"]
    vals = [t.value for t in study.get_trials(states=(TrialState.COMPLETE,))
            if t.user_attrs["variant"] == "sampler_sqrt"]
    assert row["val_macro_f1_mean"] == pytest.approx(np.mean(vals)) and row["n_seeds"] == 2
    assert row["n_pruned"] == 1 and row["n_failed"] == 1
    md = (tmp_path / "a" / "report.md").read_text()
    assert "1 running" in md and "1 pruned" in md and "1 failed" in md


def _one_line_error(proc, needle: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]


def test_bad_input_gives_one_line_and_changes_nothing(launched, tmp_path):
    d, url = launched
    before = _db_digest(d)
    _one_line_error(fer_cli("report", "no-such-study", "--storage", url, "--out", str(tmp_path / "x")),
                    "no study 'no-such-study'")
    optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path / 'e.db'}")
    _one_line_error(fer_cli("report", "empty", "--storage", f"sqlite:///{tmp_path / 'e.db'}", "--out",
                            str(tmp_path / "x")), "no complete trials")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_line_error(fer_cli("report", "report-test", "--storage", url, "--out", str(blocker / "sub")),
                    "cannot write")
    _one_line_error(fer_cli("report", "report-test", "--storage", url, "--format", "docx"), "invalid choice")
    # a corrupt logits artifact (read for calibration): a clear error naming the trial and the file
    art = tmp_path / "art"
    shutil.copytree(d / "fer-study-artifacts", art)
    study = optuna.load_study(study_name="report-test", storage=url)
    t = study.get_trials()[0]
    meta = next(m for m in get_all_artifact_meta(t, storage=study._storage) if m.filename == "probabilities.npz")
    (art / meta.artifact_id).write_bytes(b"\x00{not an npz")
    _one_line_error(fer_cli("report", "report-test", "--storage", url, "--artifacts", str(art), "--out",
                            str(tmp_path / "y")), f"trial {t.number}: artifact probabilities.npz")
    assert _db_digest(d) == before


def test_stats_helpers():
    # Holm: sorted p * (m - rank), cumulative max, capped at 1
    assert stats.holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    cm = np.zeros((5, 5), int)
    np.add.at(cm, (y, p), 1)
    assert stats.macro_f1_from_confusion(cm) == pytest.approx(
        f1_score(y, p, labels=range(5), average="macro", zero_division=0))
    f1, _ = stats.f1_parts(y, p, 5)
    assert f1.mean() == pytest.approx(stats.macro_f1_from_confusion(cm))
    assert np.isnan(stats.bootstrap_mean_ci([0.5])[0])


def test_predictions_artifact_matches_the_stored_metrics(launched):
    d, url = launched
    from fer_core.study.artifacts import PREDICTIONS_JSON, open_store, read_json_artifact

    study = optuna.load_study(study_name="report-test", storage=url)
    store = open_store(d / "fer-study-artifacts", create=False)
    for t in study.get_trials():
        pred = read_json_artifact(store, study._storage, t, PREDICTIONS_JSON)
        f1 = f1_score(pred["val"]["labels"], pred["val"]["pred"], labels=range(14), average="macro", zero_division=0)
        assert f1 == pytest.approx(t.value)  # the stored predictions are the selected epoch's
        assert json.loads(json.dumps(pred))["test"]["labels"]


# -- the dashboard in a real browser ------------------------------------------------------------



@pytest.fixture
def dashboard(launched):
    _d, url = launched
    with running_dashboard(url) as (base, proc):
        yield base, url, proc


def test_dashboard_shows_the_study_its_trials_and_a_confusion_matrix(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    base, url, _proc = dashboard
    study = optuna.load_study(study_name="report-test", storage=url)
    study_id = study._study_id
    trial = study.get_trials()[0]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/dashboard/", wait_until="networkidle")
            page.get_by_text("report-test").first.wait_for(timeout=30_000)  # the study list
            # the study page with its note: the ablation table the driver refreshed per trial
            page.goto(f"{base}/dashboard/studies/{study_id}/note", wait_until="networkidle")
            page.get_by_text("report-test: ablation table").first.wait_for(timeout=30_000)
            body = page.locator("body")
            # the report.md table with its class names and the objective's name (issue 19)
            page.get_by_role("cell", name="balanced_softmax").first.wait_for(timeout=30_000)
            for needle in ("Happily sad", "Angrily disgusted", "test macro_f1 [95% CI]",
                           "The objective (macro_f1) is the validation macro_f1"):
                body.get_by_text(needle).first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "study.png"), full_page=True)
            # the trial list: a trial's artifacts, the confusion matrix among them
            page.goto(f"{base}/dashboard/studies/{study_id}/trials", wait_until="networkidle")
            page.get_by_text("confusion_matrix.png").first.wait_for(timeout=30_000)
            page.get_by_text(f"Trial {trial.number}").first.wait_for(timeout=30_000)
            page.get_by_text(trial.user_attrs["summary"]).first.wait_for(timeout=30_000)  # the trial's note
            shot = tmp_path / "trials.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # the artifact itself is served, and is the PNG the driver uploaded
            meta = next(m for m in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
                        if m.filename == "confusion_matrix.png")
            resp = page.request.get(f"{base}/artifacts/{study_id}/{trial._trial_id}/{meta.artifact_id}")
            assert resp.ok and resp.body()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            browser.close()
    keep = os.environ.get("FER_SCREENSHOT_DIR")
    if keep:
        for f in ("study.png", "trials.png"):
            shutil.copy(tmp_path / f, os.path.join(keep, f))


def test_dashboard_binds_localhost_by_default(dashboard):
    import psutil

    base, _url, proc = dashboard
    port = int(base.rsplit(":", 1)[1])
    listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" and a.port == port for a in listening), listening


SEARCH = """
# search-test: the shipped imbalance search space, a few one-epoch trials
#   fer-study launch search-test.yaml --profile smoke
name: search-test
question: Does the report of a search design list configs, importances and the best config?
data: {dataset: synthetic}
base: {backbone: test_resnet, img_size: 48, epochs: 1, warmup_epochs: 0, batch_size: 32}
design: {kind: search, space: imbalance}
optuna_sampler: {name: random}
budget: {trials: 4, max_concurrent: 2}
"""


def test_search_study_report_has_best_trials_importances_and_a_ready_config(study_env, ray_local, tmp_path):
    from fer_core.config import build_config

    url = f"sqlite:///{study_env / 'hpo.db'}"
    (study_env / "hpo.yaml").write_text(SEARCH)
    launch(str(study_env / "hpo.yaml"), LaunchOptions(storage=url, profile="smoke", show_progress=False,
                                                      note=refresh_note))
    out = _report_study("search-test", url, tmp_path / "hpo")
    study = optuna.load_study(study_name="search-test", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    table = pd.read_csv(out / "report.csv")
    table = table[table["derived"].isna()]  # the configs' own rows (post-hoc rows follow each)
    # one row per distinct config, best first; no baseline, so no deltas
    assert len(table) == len({json.dumps({k: v for k, v in t.params.items() if k != "seed"}, sort_keys=True)
                              for t in complete})
    assert table["val_macro_f1_mean"].is_monotonic_decreasing and "delta" not in table.columns
    md = (out / "report.md").read_text()
    assert "### Best trials" in md and ("### Parameter importances" in md or "importances unavailable" in md)
    best = max(complete, key=lambda t: t.value)
    cfg = build_config(out / "best-config.yaml")  # loads and validates as a training config
    assert cfg.loss == best.params["loss"] and cfg.lr == pytest.approx(best.params["lr"])


def _report_study(name: str, url: str, out: Path, artifacts: str | None = None) -> Path:
    args = ["report", name, "--storage", url, "--out", str(out), "--quiet"]
    proc = fer_cli(*args, *(["--artifacts", artifacts] if artifacts else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out



def test_unwritable_artifact_store_warns_and_the_trial_stands(tmp_path, caplog):
    from fer_core.study.artifacts import open_store, upload_trial_artifacts

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    trial = study.ask()
    store = open_store(tmp_path / "art")
    shutil.rmtree(tmp_path / "art")  # the directory goes away (unmounted, cleaned, ...) mid-study
    k = 3
    m = {"macro_f1": 0.5, "precision": [0.5] * k, "recall": [0.5] * k, "f1": [0.5] * k, "support": [2] * k,
         "confusion_matrix": np.eye(k, dtype=int).tolist()}
    summary = {"best_epoch": 0, "val_metrics": m, "test_metrics": m,
               "predictions": {"val": {"labels": [0], "pred": [0]}}}
    warnings = upload_trial_artifacts(store, trial, summary, ["a", "b", "c"])
    assert warnings and "not writable" in warnings[0] and "not writable" in caplog.text
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    assert frozen.state == TrialState.COMPLETE and get_all_artifact_meta(frozen, storage=study._storage) == []
    # a writable store gets all three files
    store = open_store(tmp_path / "art2")
    trial = study.ask()
    assert upload_trial_artifacts(store, trial, summary, ["a", "b", "c"]) == []
    assert len(get_all_artifact_meta(trial)) == 3 and len(list((tmp_path / "art2").iterdir())) == 3


def test_probabilities_and_kept_checkpoints_reproduce_the_stored_predictions(launched, standin, tmp_path):
    """Trials store float16 probabilities beside their predictions; the top trials' best-epoch models are
    kept (keep_checkpoints, default 3) and an exported one rebuilds the stored validation probabilities."""
    import torch

    from fer_core.checkpoint import load_model
    from fer_core.data.dataset import VAL
    from fer_core.study.artifacts import PREDICTIONS_JSON, open_store, read_json_artifact
    from fer_core.study.outputs import read_probabilities

    d, url = launched
    study = optuna.load_study(study_name="report-test", storage=url)
    store = open_store(d / "fer-study-artifacts", create=False)
    for t in study.get_trials():
        probs = read_probabilities(store, study._storage, t)
        pred = read_json_artifact(store, study._storage, t, PREDICTIONS_JSON)
        assert probs["val_probs"].shape == (len(pred["val"]["labels"]), 14)
        assert probs["val_labels"].tolist() == pred["val"]["labels"]
        agree = (probs["val_probs"].argmax(1) == np.asarray(pred["val"]["pred"])).mean()
        assert agree > 0.99  # float16 rounding may flip a near-tie, nothing more
        assert probs["test_probs"].shape[0] == len(pred["test"]["labels"])
    kept = sorted((d / "fer-study-artifacts" / "checkpoints" / "report-test").glob("trial-*.pt"))
    top = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))[:3]
    assert [int(f.stem.split("-")[1]) for f in kept] == sorted(t.number for t in top)
    assert not list((d / "runs").rglob("fer-outputs/*/model.pt"))  # the scratch copies are gone

    best = top[0]
    out = tmp_path / "best.pt"
    proc = fer_cli("export", "report-test", "--trial", str(best.number), "--storage", url, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, meta = load_model(out)
    assert meta["class_names"] == list(standin.class_names) and meta["trial"] == best.number
    idx = standin.indices(VAL)
    with torch.no_grad():
        got = model(standin.images[idx].float() / 255)["logits"].softmax(1).numpy()
    stored = read_probabilities(store, study._storage, best)["val_probs"]
    np.testing.assert_allclose(got, stored, atol=2e-3)  # float16 storage
    f1 = f1_score(standin.labels[idx].numpy(), got.argmax(1), labels=range(14), average="macro", zero_division=0)
    assert f1 == pytest.approx(best.value, abs=0.01)
    not_kept = next(t.number for t in study.get_trials() if t.number not in {x.number for x in top})
    _one_line_error(fer_cli("export", "report-test", "--trial", str(not_kept), "--storage", url,
                            "--out", str(tmp_path / "x.pt")), "no checkpoint kept")


def test_ensemble_command_stores_a_derived_entry_the_report_shows(launched, tmp_path):
    d, _url = launched
    shutil.copy(d / "fer-study.db", tmp_path / "fer-study.db")
    url2 = f"sqlite:///{tmp_path / 'fer-study.db'}"
    art = str(d / "fer-study-artifacts")  # read only: the ensemble writes the storage, not the store
    best = optuna.load_study(study_name="report-test", storage=url2).best_trial.number
    proc = fer_cli("ensemble", "report-test", "--top", "3", "--diverse", "--storage", url2, "--artifacts", art)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ensemble of 3 trials" in proc.stdout and "derived: not a trial" in proc.stdout
    study = optuna.load_study(study_name="report-test", storage=url2)
    entry = study.user_attrs["ensemble:top3-macro_f1-diverse"]
    variants = {study.trials[n].user_attrs["variant"] for n in entry["members"]}
    assert len(variants) == 3  # --diverse: one trial per config
    assert len(study.trials) == 6 and study.best_trial.number == best  # not a trial
    table = pd.read_csv(_report_study("report-test", url2, tmp_path / "r", art) / "report.csv")
    row = table.set_index("variant").loc["ensemble:top3-macro_f1-diverse"]
    assert row["val_macro_f1_mean"] == pytest.approx(entry["val"]["macro_f1"]) and not row["best"]
    import optuna_dashboard

    assert "ensemble:top3-macro_f1-diverse" in optuna_dashboard.get_note(study)
    _one_line_error(fer_cli("ensemble", "report-test", "--top", "0", "--storage", url2, "--artifacts", art),
                    "--top: must be an integer in 1..1000")


def test_confirm_retrains_the_best_variant_on_fresh_seeds_and_reports_it_held_out(launched, tmp_path):
    d, _ = launched
    shutil.copy(d / "fer-study.db", tmp_path / "fer-study.db")  # the shared study stays as it is
    url = f"sqlite:///{tmp_path / 'fer-study.db'}"
    proc = fer_cli("confirm", "report-test", "--top", "1", "--seeds", "2", "--storage", url, "--profile", "smoke",
                   "--out", str(tmp_path / "confirm"), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="report-test", storage=url)
    means = {}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        means.setdefault(t.user_attrs["variant"], []).append(t.value)
    best = max((v for v in means if v != "plain-ce"), key=lambda v: np.mean(means[v]))  # chosen on validation
    confirm = optuna.load_study(study_name="report-test-confirm", storage=url)
    trials = confirm.get_trials(states=(TrialState.COMPLETE,))
    assert sorted((t.user_attrs["variant"], t.user_attrs["seed"]) for t in trials) == sorted(
        [("plain-ce", 2), ("plain-ce", 3), (f"top1-{best}", 2), (f"top1-{best}", 3)])  # seeds 0, 1 were used
    out = tmp_path / "rep"
    assert fer_cli("report", "report-test-confirm", "--storage", url, "--out", str(out)).returncode == 0
    row = pd.read_csv(out / "report.csv").set_index("variant").loc[f"top1-{best}"]
    assert row["n_paired"] == 2 and row["delta_ci_lo"] <= row["delta"] <= row["delta_ci_hi"]
