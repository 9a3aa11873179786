"""The trial-result contract (fer_core/study/result.py): the worker's summary carries every stored
attr under the name it is stored by, the driver writes them as they came and the report reads
them back; the names themselves are what users' storages hold and never change."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState

from fer_core.metric_names import SCALAR_METRICS
from fer_core.study.inmemory import quiet_memory_study
from fer_core.study.result import RESULT_ATTRS, store_result, stored_result
from fer_core.study.trainable import _summary
from fer_core.train import train_fer

# written by every version so far (docs/concepts/architecture.md, "Trial results"): renaming one orphans stored studies
STORED_NAMES = ("best_epoch", "epochs_run", "stopped_early", "val_metrics", "test_metrics", "val_f1_per_class",
                "test_f1_per_class", "test_macro_f1", "val_tail_f1", "test_tail_f1", "device", "train_seconds",
                "node_id", "tta_metrics", "predictions_packed", "posthoc_metrics", "weights", "train_loss",
                "amp")


@pytest.fixture(scope="module")
def result(small):
    return train_fer({"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1,
                      "warmup_epochs": 0, "tta": "flip"}, dataset=small)


def test_the_stored_names_never_change():
    assert RESULT_ATTRS == STORED_NAMES


def test_worker_driver_and_report_share_one_shape(result):
    summary = json.loads(json.dumps(_summary(result)))  # what crosses from the worker: one JSON string
    assert set(RESULT_ATTRS) <= set(summary)
    val, test = summary["val_metrics"], summary["test_metrics"]
    assert test["f1"] == summary["test_f1_per_class"] and "precision" not in test  # test keeps only F1 per class
    assert [k for k in val if not isinstance(val[k], list)] == [k for k in SCALAR_METRICS if k in result["val"]]
    assert val["macro_f1"] == result["val"]["macro_f1"] and summary["test_macro_f1"] == result["test"]["macro_f1"]
    assert summary["val_f1_per_class"] == val["f1"] and summary["train_seconds"] == result["seconds"]
    assert summary["tta_metrics"]["name"] == "flip"
    assert summary["amp"] == result["amp"] in ("bf16", "off")  # the precision it trained in

    study = quiet_memory_study()
    trial = study.ask()
    store_result(trial, summary)
    study.tell(trial, val["macro_f1"])
    stored = study.trials[0]
    # only the contract's attrs are stored: the artifact-only parts (predictions, fingerprint) are not
    assert set(stored.user_attrs) == set(RESULT_ATTRS)
    assert stored_result(stored) == {k: summary[k] for k in RESULT_ATTRS}


def test_a_trial_without_results_reads_as_nones():
    study = quiet_memory_study()
    study.tell(study.ask(), state=TrialState.PRUNED)
    assert stored_result(study.trials[0]) == dict.fromkeys(RESULT_ATTRS)


def test_per_au_metrics_and_thresholds_are_stored_with_a_trial(small):
    from fer_core.metric_names import AU_LISTS

    result = train_fer({"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1,
                        "warmup_epochs": 0, "au_weight": 1.0}, dataset=small)
    summary = json.loads(json.dumps(_summary(result)))  # NaN (an AU a split cannot score) survives JSON
    for split in ("val_metrics", "test_metrics"):
        assert all(len(summary[split][k]) == 18 for k in AU_LISTS)
        assert {"au_f1", "au_auc", "au_f1_tuned"} <= set(summary[split])
    assert summary["val_metrics"]["au_threshold"] == summary["test_metrics"]["au_threshold"]
    assert summary["weights"] == "random init"
