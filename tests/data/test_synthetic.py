from __future__ import annotations

import numpy as np
import pytest

from fer_core.data.dataset import AU_INDEX, AU_VOCAB, RAFCE_STATS, TRAIN
from fer_core.data.synthetic import au_frequencies, render_faces, sample_nuisance, synthesize_rafce
from fer_core.errors import ConfigError


def test_counts_match_real_partitions(standin):
    for part, counts in RAFCE_STATS["partition_counts"].items():
        assert standin.class_counts(int(part)) == counts
    assert standin.info["source"] == "synthetic" and standin.has_aus
    assert standin.images.shape[1:] == (3, 48, 48)
    assert len(set(standin.keys)) == len(standin.keys) and standin.keys[-1] <= "4908.jpg"


def test_au_marginals_match_real_frequencies(standin):
    p = au_frequencies()
    train = standin.split == TRAIN
    y, aus = standin.labels[train].numpy(), standin.aus[train].numpy()
    n = len(y)
    expected = p[y].mean(axis=0)
    sd = np.sqrt((p[y] * (1 - p[y])).sum(axis=0)) / n
    assert (np.abs(aus.mean(axis=0) - expected) < 4 * sd + 0.005).all()
    for c in np.flatnonzero(np.bincount(y) >= 300):  # the big classes, per class
        m = y == c
        sd_c = np.sqrt(p[c] * (1 - p[c]) / m.sum())
        assert (np.abs(aus[m].mean(axis=0) - p[c]) < 4 * sd_c + 0.01).all(), RAFCE_STATS["classes"][c]


def test_au_file_quirks_at_realistic_rates(standin):
    k = standin.info["au_token_kinds"]
    tokens = k["plain"] + k["side_prefixed"]
    assert 0.03 < k["side_prefixed"] / tokens < 0.07
    assert 150 < k["null"] < 400  # real: 251 of 4549
    assert 3 <= k["malformed"] <= 10 and k["repeated"] > 0 and k["out_of_vocab"] > 0


def test_deterministic_and_seed_dependent(standin, cache_dir, tmp_path):
    from pathlib import Path

    ref = Path(cache_dir) / "synthetic-rafce-seed0-48px"
    same = synthesize_rafce(tmp_path / "same", seed=0, img_size=48)
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert len(files) == 4549 + 4
    assert all((ref / f).read_bytes() == (same / f).read_bytes() for f in files)
    other = synthesize_rafce(tmp_path / "other", seed=1, img_size=48)
    assert (other / "RAFCE_emolabel.txt").read_text() != (ref / "RAFCE_emolabel.txt").read_text()
    assert (other / "RAFCE_AUlabel.txt").read_text() != (ref / "RAFCE_AUlabel.txt").read_text()
    img = "aligned/0001_aligned.jpg"
    if (other / img).exists() and (ref / img).exists():
        assert (other / img).read_bytes() != (ref / img).read_bytes()


def _region_diff(a: np.ndarray, b: np.ndarray, rows: slice, cols: slice) -> float:
    """Largest change of 2x2-pooled pixels: shapes that move survive pooling, pixel noise does not."""
    d = a[rows, cols].astype(float) - b[rows, cols].astype(float)
    h, w = d.shape[0] // 2 * 2, d.shape[1] // 2 * 2
    pooled = d[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    return float(np.abs(pooled).max())


@pytest.mark.parametrize(("aus", "rows"), [((12, 26), slice(32, 60)), ((1, 2), slice(8, 32)), ((4,), slice(8, 32))])
def test_images_depend_on_aus(aus, rows):
    nu = sample_nuisance(np.random.default_rng(5), 1)
    zero = np.zeros((1, len(AU_VOCAB)), dtype=np.float32)
    on = zero.copy()
    for au in aus:
        on[0, AU_INDEX[au]] = 1.0
    base = render_faces(nu, zero, 64, noise_seed=0)[0]
    rerender = render_faces(nu, zero, 64, noise_seed=1)[0]  # only the pixel noise differs
    moved = render_faces(nu, on, 64, noise_seed=0)[0]
    cols = slice(12, 52)
    assert _region_diff(base, moved, rows, cols) > 3 * _region_diff(base, rerender, rows, cols)


@pytest.mark.parametrize("size", [47, 225, 64.0, True])
def test_bad_img_size(tmp_path, size):
    with pytest.raises(ConfigError, match="img_size"):
        synthesize_rafce(tmp_path, img_size=size)
