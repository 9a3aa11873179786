"""Trial ensembles from stored probabilities, stored as derived entries, and TTA/ensemble report rows.

In-process (no Ray): a trained result goes through the driver's storage path (artifacts,
tell) as three identical trials, on SQLite and on PostgreSQL."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from fer_core.errors import FerError
from fer_core.metrics import classification_metrics
from fer_core.report.ensemble import build_ensemble, rank_trials, save_ensemble
from fer_core.report.table import build_table, load_study_data, markdown
from fer_core.study.artifacts import open_store, upload_trial_artifacts
from fer_core.study.outputs import read_probabilities, write_trial_outputs
from fer_core.study.trainable import _summary
from fer_core.train import train_fer

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0, "tta": "flip"}


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory):
    result = train_fer(TINY, dataset=small)
    out = tmp_path_factory.mktemp("outputs")
    write_trial_outputs(out, result)
    return result, out


def _store_trials(study, store, result, out, seeds=(0, 1, 2)) -> None:
    """What the bridge does for each finished trial: result attrs, artifacts, tell."""
    summary = _summary(result)
    study.set_user_attr("class_names", result["class_names"])
    study.set_user_attr("class_counts", result["train_counts"])
    for seed in seeds:
        trial = study.ask()
        for k in ("val_metrics", "test_metrics", "val_tail_f1", "tta_metrics"):  # stored under its own names
            trial.set_user_attr(k, summary[k])
        trial.set_user_attr("variant", "baseline")
        trial.set_user_attr("seed", seed)
        assert upload_trial_artifacts(store, trial, summary, result["class_names"], str(out)) == []
        study.tell(trial, result["val"]["macro_f1"])


def test_an_ensemble_of_identical_trials_equals_the_trial(trained, storage, tmp_path):
    result, out = trained
    study = optuna.create_study(study_name="ens", storage=storage, direction="maximize")
    store = open_store(tmp_path / "art")
    _store_trials(study, store, result, out)
    best_before = study.best_trial.number

    stored = read_probabilities(store, study._storage, study.trials[0])
    assert stored["val_probs"].dtype == np.float32 and str(stored["tta"]) == "flip"
    np.testing.assert_allclose(stored["val_probs"], result["predictions"]["val"]["probs"], atol=1e-3)
    entry = build_ensemble(study, store, top=3, groups=result["groups"])
    assert entry["members"] == [0, 1, 2] and entry["derived"] == "ensemble"
    for split in ("val", "test"):
        # exactly the metrics of one member's stored probabilities ...
        want = classification_metrics(stored[f"{split}_labels"], stored[f"{split}_probs"].argmax(1), 14,
                                      result["groups"])
        assert entry[split]["f1"] == want["f1"] and entry[split]["macro_f1"] == want["macro_f1"]
        # ... and the trial's own float32 metrics up to float16 rounding of near-ties
        assert entry[split]["macro_f1"] == pytest.approx(result[split]["macro_f1"], abs=0.02)

    save_ensemble(study, entry)
    # derived, not a trial: best trial, trial list and samplers are untouched
    assert len(study.trials) == 3 and study.best_trial.number == best_before
    assert all(not t.user_attrs.get("derived") for t in study.trials)
    data = load_study_data(study, store=store)
    table = build_table(data)
    rows = table.set_index("variant")
    assert list(table["variant"]) == ["baseline", "baseline +tta:flip", "ensemble:top3-macro_f1"]
    assert rows.loc["ensemble:top3-macro_f1", "derived"] == "ensemble"
    assert not rows.loc["ensemble:top3-macro_f1", "best"] and rows.loc["baseline", "best"]
    assert rows.loc["ensemble:top3-macro_f1", "val_macro_f1_mean"] == entry["val"]["macro_f1"]
    tta = rows.loc["baseline +tta:flip"]
    assert tta["val_macro_f1_mean"] == pytest.approx(result["tta"]["val"]["macro_f1"])
    assert tta["tta_gain"] == pytest.approx(result["tta"]["test"]["macro_f1"] - result["test"]["macro_f1"])
    md = markdown(data, table)
    assert "ensemble:top3-macro_f1" in md and "derived: mean probabilities of trials 0,1,2" in md
    assert "derived: TTA on the same trials" in md


def test_a_tta_ensemble_averages_the_tta_probabilities(trained, tmp_path):
    result, out = trained
    study = optuna.create_study(direction="maximize")
    store = open_store(tmp_path / "art")
    _store_trials(study, store, result, out)
    entry = build_ensemble(study, store, top=3, tta=True, groups=result["groups"])
    assert entry["name"] == "top3-macro_f1-tta" and entry["tta"] == ["flip"]
    stored = read_probabilities(store, study._storage, study.trials[0])
    for split in ("val", "test"):
        # the members' flip-TTA probabilities, not their plain ones: the trial's own TTA metrics
        want = classification_metrics(stored[f"{split}_labels"], stored[f"{split}_tta_probs"].argmax(1), 14,
                                      result["groups"])
        assert entry[split]["macro_f1"] == want["macro_f1"] and entry[split]["f1"] == want["f1"]
        assert entry[split]["macro_f1"] == pytest.approx(result["tta"][split]["macro_f1"], abs=0.02)
    assert not np.array_equal(stored["val_tta_probs"], stored["val_probs"])  # so the two could differ

    plain = optuna.create_study(direction="maximize")  # trials without TTA cannot make a TTA ensemble
    no_tta = tmp_path / "no-tta"
    no_tta.mkdir()
    arrays = dict(np.load(out / "probabilities.npz"))
    np.savez(no_tta / "probabilities.npz", **{k: v for k, v in arrays.items() if "tta" not in k})
    _store_trials(plain, store, result, no_tta, seeds=(0,))
    with pytest.raises(FerError, match="no complete trial with stored TTA probabilities"):
        build_ensemble(plain, store, top=1, tta=True)


def test_selection_by_validation_metric_and_diversity(trained, tmp_path):
    result, out = trained
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    store = open_store(tmp_path / "art")
    summary = _summary(result)
    dists = {"lr": optuna.distributions.CategoricalDistribution([1e-3, 1e-2]),
             "seed": optuna.distributions.CategoricalDistribution([0, 1])}
    for i, (lr, seed, f1) in enumerate([(1e-3, 0, 0.3), (1e-3, 1, 0.5), (1e-2, 0, 0.4), (1e-2, 1, 0.1)]):
        study.enqueue_trial({"lr": lr, "seed": seed})
        t = study.ask(dists)
        t.set_user_attr("val_metrics", {**summary["val_metrics"], "macro_f1": f1, "tail_f1": 1 - f1})
        if i != 2:  # one trial without stored probabilities (an old trial, another store): skipped
            upload_trial_artifacts(store, t, summary, result["class_names"], str(out))
        study.tell(t, f1)
    by_f1 = [t.params["lr"] for t in rank_trials(study, "macro_f1", diverse=False)]
    assert by_f1 == [1e-3, 1e-2, 1e-3, 1e-2]
    assert [t.user_attrs["val_metrics"]["macro_f1"] for t in rank_trials(study, "macro_f1", True)] == [0.5, 0.4]
    assert rank_trials(study, "tail_f1", False)[0].user_attrs["val_metrics"]["tail_f1"] == 0.9
    entry = build_ensemble(study, store, top=2, diverse=True)
    assert len(entry["members"]) == 1 and entry["skipped_without_probabilities"] == [2]
    with pytest.raises(FerError, match="--by: unknown metric 'auc'"):
        build_ensemble(study, store, top=2, by="auc")
    with pytest.raises(FerError, match="--name"):
        build_ensemble(study, store, top=2, name="a b;drop")


def test_ensemble_says_when_fewer_members_than_asked_were_usable(trained, tmp_path, capsys):
    from fer_core.cli import main

    result, out = trained
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="ens", storage=url, direction="maximize")
    _store_trials(study, open_store(tmp_path / "art"), result, out, seeds=(0, 1))
    assert main(["ensemble", "ens", "--top", "3", "--storage", url, "--artifacts", str(tmp_path / "art")]) == 0
    printed = capsys.readouterr().out
    assert "ensemble of 2 trials" in printed
    assert "note: --top 3 asked for 3 members; only 2 complete trial(s) with stored probabilities" in printed
