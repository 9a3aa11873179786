from __future__ import annotations

import numpy as np
import pytest
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


# -- per-AU metrics, balanced BCE, thresholds chosen on validation ---------------------------------
def _aus(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """AUs from 1 % to ~87 % prevalence, one never present, one always present; informative probs."""
    rng = np.random.default_rng(seed)
    prev = np.array([0.01, 0.05, 0.3, 0.87, 0.0, 1.0])
    truth = (rng.random((n, len(prev))) < prev).astype(np.float32)
    prob = np.clip(0.35 * truth + 0.65 * rng.random(truth.shape), 0, 1)
    return truth, prob


def test_per_au_f1_and_auc_match_sklearn_and_unscorable_aus_are_nan():
    from sklearn.metrics import f1_score, roc_auc_score

    from fer_core.metrics import au_metrics

    truth, prob = _aus()
    th = np.array([0.5, 0.4, 0.6, 0.5, 0.5, 0.3])
    m = au_metrics(truth, prob, th)
    for a in (0, 1, 2, 3):
        assert m["au_f1_per_au"][a] == pytest.approx(f1_score(truth[:, a], prob[:, a] >= th[a]))
        assert m["au_auc_per_au"][a] == pytest.approx(roc_auc_score(truth[:, a], prob[:, a]))
    assert np.isnan(m["au_f1_per_au"][4]) and np.isnan(m["au_auc_per_au"][4])  # never present: no F1, no AUC
    assert not np.isnan(m["au_f1_per_au"][5]) and np.isnan(m["au_auc_per_au"][5])  # always present: F1, no AUC
    assert m["au_f1_tuned"] == pytest.approx(np.mean(m["au_f1_per_au"][:4] + m["au_f1_per_au"][5:]))
    assert m["au_auc"] == pytest.approx(np.mean(m["au_auc_per_au"][:4]))
    assert m["au_threshold"] == th.tolist()
    empty = au_metrics(np.zeros((0, 3)), np.zeros((0, 3)))  # an empty split: NaNs, no crash
    assert all(np.isnan(v) for v in empty["au_f1_per_au"] + empty["au_auc_per_au"])


def test_balanced_pos_weight_is_negatives_over_positives_per_au():
    from fer_core.metrics import au_pos_weight

    train = np.array([[1, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]], dtype=np.float32)
    # AU 0: 1 positive, 3 negatives -> 3; AU 1 likewise; AU 2 never present and AU 3 always: 1 (nothing to balance)
    assert au_pos_weight(train).tolist() == [3.0, 3.0, 1.0, 1.0]


def test_au_thresholds_are_chosen_on_validation_to_maximise_f1():
    from fer_core.metrics import choose_au_thresholds

    truth, prob = _aus(seed=1)
    th = choose_au_thresholds(truth, prob)
    for a in (0, 1, 2, 3, 5):
        best = max(f1_score(truth[:, a], prob[:, a] >= t) for t in np.unique(prob[:, a]))  # every cut, by brute force
        assert f1_score(truth[:, a], prob[:, a] >= th[a]) == pytest.approx(best)
    assert th[4] == 0.5  # no positive on validation: the default threshold
    # ties: equal probabilities are one cut (never half of a tie group)
    assert choose_au_thresholds(np.array([[1], [0], [1]]), np.array([[0.7], [0.7], [0.2]]))[0] in (0.7, 0.2)
