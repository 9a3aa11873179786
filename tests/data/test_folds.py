"""k-fold CV: stratified folds over the train+val pool, whole groups per fold, scored out of fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_core.config import resolve_config
from fer_core.data.dataset import TEST, TRAIN, UNUSED, VAL, FerDataset
from fer_core.data.folds import assign_folds, fold_dataset, image_groups
from fer_core.data.manifest import read_manifest
from fer_core.errors import ConfigError, DataError


def _subjects(seed: int = 0):
    """60 subjects x 5 near-identical images; the label belongs to the subject (imbalanced 30/15/10/5),
    the features only to the subject: a nearest-neighbour model scores only through leakage."""
    rng = np.random.default_rng(seed)
    subject_label = np.repeat([0, 1, 2, 3], [30, 15, 10, 5])
    centres = rng.normal(size=(60, 16))
    groups = np.repeat(np.arange(60), 5)
    labels = subject_label[groups]
    x = centres[groups] + 0.01 * rng.normal(size=(300, 16))
    return x, labels, groups


def _nn_accuracy(x, labels, folds) -> float:
    hits = 0
    for f in np.unique(folds):
        tr, va = folds != f, folds == f
        d = ((x[va, None, :] - x[None, tr, :]) ** 2).sum(-1)
        hits += (labels[tr][d.argmin(1)] == labels[va]).sum()
    return hits / len(labels)


def test_grouped_folds_keep_every_subject_in_one_fold_so_leakage_cannot_score():
    x, labels, groups = _subjects()
    grouped = assign_folds(labels, groups, 5, seed=0)
    plain = assign_folds(labels, None, 5, seed=0)
    for g in np.unique(groups):
        assert len(set(grouped[groups == g])) == 1  # no subject in two folds
    assert any(len(set(plain[groups == g])) > 1 for g in np.unique(groups))  # the ungrouped folds do split them
    # the data is built so that leakage shows: same-subject neighbours give the label away
    assert _nn_accuracy(x, labels, plain) > 0.95
    assert _nn_accuracy(x, labels, grouped) < 0.6
    # stratified: every fold holds every class, in proportion (whole subjects: within one subject of it)
    for f in range(5):
        counts = np.bincount(labels[grouped == f], minlength=4)
        assert np.all(np.abs(counts - np.bincount(labels, minlength=4) / 5) <= 5)
        counts = np.bincount(labels[plain == f], minlength=4)
        assert np.all(np.abs(counts - np.bincount(labels, minlength=4) / 5) <= 1)


def test_fold_dataset_holds_one_fold_out_selects_on_the_next_and_sets_the_test_split_aside(small):
    pattern = r"re:^(\d{3})"  # ids 0010-0019 are one "subject"
    groups = image_groups(small, pattern)
    pool = (small.split != TEST).numpy()
    held, vals = [], []
    for fold in range(4):
        ds = fold_dataset(small, 4, fold, pattern, seed=7)
        assert torch.equal(ds.split == UNUSED, small.split == TEST) and torch.equal(ds.labels, small.labels)
        test, val, train = ((ds.split == s).numpy() for s in (TEST, VAL, TRAIN))
        for a, b in ((test, val), (test, train), (val, train)):  # no subject on two sides
            assert not set(groups[a]) & set(groups[b])
        assert set(np.unique(small.labels.numpy()[test])) == set(range(14))  # stratified: every class held out
        held.append(test)
        vals.append(val)
        assert ds.fingerprint != small.fingerprint
    # the held-out folds partition the pool (every image predicted once), the next fold selects
    assert np.array_equal(np.sum(held, axis=0), pool.astype(int))
    assert all(np.array_equal(vals[f], held[(f + 1) % 4]) for f in range(4))
    again = fold_dataset(small, 4, 1, pattern, seed=7)
    assert torch.equal(again.split, fold_dataset(small, 4, 1, pattern, seed=7).split)  # same folds every variant
    assert not torch.equal(again.split, fold_dataset(small, 4, 1, pattern, seed=8).split)  # another unit: another cut
    with pytest.raises(ConfigError, match="needs at least 3 folds"):
        fold_dataset(small, 2, 0)


def test_group_keys_from_a_manifest_column_and_bad_grouping(tmp_path, image_writer):
    rows = ["a.jpg,x,train,s1", "b.jpg,y,train,s1", "c.jpg,x,val,s2", "d.jpg,y,test,s3"]
    for i, r in enumerate(rows):
        image_writer(tmp_path / r.split(",")[0], seed=i)
    (tmp_path / "m.csv").write_text("path,label,split,subject\n" + "\n".join(rows) + "\n")
    raw = read_manifest(tmp_path / "m.csv")
    assert raw.info["columns"] == {"subject": ["s1", "s1", "s2", "s3"]}
    ds = FerDataset(images=torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels=torch.tensor([0, 1, 0, 1]),
                    aus=torch.zeros(4, 18), split=torch.tensor([0, 0, 1, 2], dtype=torch.int8),
                    class_names=("x", "y"), fingerprint="f", keys=("a.jpg", "b.jpg", "c.jpg", "d.jpg"),
                    info=raw.info)
    assert image_groups(ds, "subject").tolist() == ["s1", "s1", "s2", "s3"]
    with pytest.raises(DataError, match="no such column in the data source; extra columns: subject"):
        image_groups(ds, "video")
    with pytest.raises(DataError, match="does not match the pattern"):
        image_groups(ds, r"re:^z")
    with pytest.raises(DataError, match="3 folds need at least 3 groups"):
        assign_folds(np.array([0, 1, 0]), np.array(["s1", "s1", "s2"]), 3, 0)


@pytest.mark.parametrize(("config", "needle"), [
    ({"cv_folds": 1}, "cv_folds must be 0"),
    ({"cv_folds": 2}, "or at least 3 (one fold held out"),
    ({"cv_folds": 3, "cv_fold": 3}, "cv_fold (3) must be smaller than cv_folds (3)"),
    ({"cv_fold": 1}, "cv_fold (1) must be smaller"),
    ({"cv_folds": 3, "cv_group_by": "re:(["}, "cv_group_by: invalid regex"),
    ({"cv_folds": 3, "cv_group_by": "sub ject"}, "cv_group_by: 'sub ject'; allowed"),
])
def test_cv_keys_are_validated(config, needle):
    with pytest.raises(ConfigError) as exc:
        resolve_config(config)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
