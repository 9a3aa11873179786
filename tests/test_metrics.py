from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from fer_core.data.dataset import RAFCE_STATS
from fer_core.metrics import au_macro_f1, class_groups, classification_metrics


def test_rafce_tail_is_classes_12_13_8_4():
    counts = RAFCE_STATS["partition_counts"]["0"]
    groups = class_groups(counts, tail_max_count=100, head_min_count=300)
    assert sorted(groups["tail"]) == [4, 8, 12, 13]
    assert sorted(groups["head"]) == [0, 5, 7, 10]
    assert len(groups["head"]) + len(groups["medium"]) + len(groups["tail"]) == 14


def test_classification_metrics_match_sklearn_and_groups():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    groups = {"head": [0, 1], "medium": [2], "tail": [3, 4]}
    m = classification_metrics(y, pred, 5, groups)
    assert np.isclose(m["macro_f1"], f1_score(y, pred, average="macro"))
    assert np.isclose(m["tail_f1"], np.mean([m["f1"][3], m["f1"][4]]))
    assert np.array(m["confusion_matrix"]).sum() == 200
    assert np.array(m["confusion_matrix"]).trace() == (y == pred).sum()
    assert m["support"] == np.bincount(y, minlength=5).tolist()


def test_au_f1_ignores_never_present_aus():
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    prob = np.array([[0.9, 0.1, 0.9], [0.2, 0.8, 0.9], [0.7, 0.6, 0.9]])
    assert au_macro_f1(truth, prob) == 1.0  # AU 3 never occurs: not scored
