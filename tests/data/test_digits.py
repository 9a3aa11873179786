"""The long-tailed digits set: real scans from scikit-learn, cut to imbalance ratio 50 with balanced
validation and test splits, built once in the cache and read like a user's image folders."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from fer_core.data.dataset import TEST, TRAIN, VAL
from fer_core.data.digits import IMBALANCE_RATIO, train_counts
from fer_core.data.sources import load_dataset


def test_long_tailed_train_balanced_val_and_test_real_scans(tmp_path):
    ds = load_dataset(dataset="digits", img_size=16, cache_dir=tmp_path)
    counts = ds.class_counts(TRAIN)
    assert counts == train_counts() == [100, 65, 42, 27, 18, 11, 7, 5, 3, 2]
    assert counts[0] / counts[-1] == IMBALANCE_RATIO
    assert ds.class_counts(VAL) == ds.class_counts(TEST) == [30] * 10
    assert ds.class_names == tuple(f"digit-{c}" for c in range(10)) and not ds.has_aus
    # every image is one of sklearn's scans (upsampled): its 8x8 average pooling matches one of them
    scans = load_digits()
    small = torch.nn.functional.avg_pool2d(ds.images[:, :1].float(), 2).squeeze(1).numpy() / 255 * 16
    for i in (0, len(ds.labels) // 2, len(ds.labels) - 1):
        same = scans.images[scans.target == int(ds.labels[i])]
        assert np.abs(same - small[i]).mean(axis=(1, 2)).min() < 1.0
    # no scan is in two splits, and a second load reuses the cache
    assert len(set(ds.keys)) == len(ds.keys)
    again = load_dataset(dataset="digits", img_size=16, cache_dir=tmp_path)
    assert again.info["from_cache"] and again.fingerprint == ds.fingerprint
    other = load_dataset(dataset="digits", img_size=16, data_seed=1, cache_dir=tmp_path)
    assert other.fingerprint != ds.fingerprint  # the seed draws which scans go where
