from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fer_core.augment import augment_batch, sample_strength
from fer_core.errors import ConfigError

RAFCE_TRAIN = [394, 171, 109, 136, 71, 495, 120, 352, 24, 124, 582, 108, 6, 17]  # RAF-CE train counts


def faces(b: int = 32, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images (like faces, unlike white noise) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, 3, 6, 6, generator=g), size=size, mode="bilinear").clamp(0, 1)


def run(x: torch.Tensor, strength: float | torch.Tensor, seed: int = 1) -> torch.Tensor:
    s = strength if isinstance(strength, torch.Tensor) else torch.full((x.shape[0],), strength)
    return augment_batch(x, s, torch.Generator().manual_seed(seed))


def test_zero_strength_is_identity() -> None:
    x = faces()
    assert torch.equal(run(x, 0.0), x)


def test_zero_strength_samples_untouched_in_mixed_batch() -> None:
    x = faces()
    s = torch.linspace(0, 1, x.shape[0])
    s[::2] = 0
    y = run(x, s)
    assert torch.equal(y[::2], x[::2])
    assert not torch.equal(y[1::2], x[1::2])


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_range_shape_dtype(strength: float) -> None:
    x = faces(size=40)
    y = run(x, strength)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()


def test_non_square_images() -> None:
    x = F.interpolate(faces(8), size=(24, 40), mode="bilinear")
    assert run(x, 1.0).shape == x.shape


def test_same_seed_same_output() -> None:
    x = faces()
    assert torch.equal(run(x, 0.7, seed=5), run(x, 0.7, seed=5))
    assert not torch.equal(run(x, 0.7, seed=5), run(x, 0.7, seed=6))


def test_higher_strength_changes_more() -> None:
    x = faces(b=128)
    changes = [float((run(x, s) - x).abs().mean()) for s in (0.1, 0.4, 1.0)]
    assert changes[0] < changes[1] < changes[2]


def test_minority_boost_gives_rare_classes_more_strength() -> None:
    labels = torch.arange(len(RAFCE_TRAIN))
    s = sample_strength(labels, 0.2, 0.5, RAFCE_TRAIN)
    counts = torch.tensor(RAFCE_TRAIN)
    assert s[counts.argmax()] == pytest.approx(0.2)  # largest class: no boost
    order = counts.argsort(descending=True)
    assert torch.all(s[order][1:] > s[order][:-1])  # fewer images -> stronger augmentation
    assert s[counts.argmin()] == pytest.approx(0.2 + 0.5 * (1 - (6 / 582) ** 0.5))
    assert torch.equal(sample_strength(labels, 0.2, 0.0, RAFCE_TRAIN), torch.full((14,), 0.2))
    assert sample_strength(labels, 0.9, 1.0, RAFCE_TRAIN).max() == 1.0  # clamped


@pytest.mark.parametrize(("key", "args"), [("aug_strength", (1.5, 0.0)), ("minority_boost", (0.2, -0.1))])
def test_sample_strength_rejects_bad_values(key: str, args: tuple[float, float]) -> None:
    with pytest.raises(ConfigError, match=key):
        sample_strength(torch.zeros(3, dtype=torch.long), *args, RAFCE_TRAIN)
