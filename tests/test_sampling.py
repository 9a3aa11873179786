from __future__ import annotations

import pytest
import torch

from fer_core.errors import ConfigError
from fer_core.registry import lookup
from fer_core.sampling import DATA_SAMPLERS, REBALANCING_SAMPLERS

RAFCE_TRAIN = [394, 171, 109, 136, 71, 495, 120, 352, 24, 124, 582, 108, 6, 17]  # RAF-CE train counts
LABELS = torch.repeat_interleave(torch.arange(14), torch.tensor(RAFCE_TRAIN))
EPOCHS = 10


def class_share(plan, epochs: range, seed: int = 0) -> torch.Tensor:
    """Fraction of draws per class over the given epochs."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat([torch.cat(plan.batches(e, g)) for e in epochs])
    return torch.bincount(LABELS[idx], minlength=14).double() / idx.numel()


EMPIRICAL = torch.tensor(RAFCE_TRAIN, dtype=torch.float64) / sum(RAFCE_TRAIN)
UNIFORM = torch.full((14,), 1 / 14, dtype=torch.float64)


def test_names_and_rebalancing_set() -> None:
    assert set(DATA_SAMPLERS) == {"none", "weighted", "sqrt", "balanced", "curriculum"}
    assert set(REBALANCING_SAMPLERS) == set(DATA_SAMPLERS) - {"none"}
    assert DATA_SAMPLERS.kind == "data sampler" and DATA_SAMPLERS.key == "sampler"
    with pytest.raises(ConfigError, match="sampler"):
        lookup(DATA_SAMPLERS, "tpe")


@pytest.mark.parametrize("name", sorted(DATA_SAMPLERS))
def test_batch_geometry(name: str) -> None:
    plan = DATA_SAMPLERS[name](LABELS, 64, EPOCHS)
    batches = plan.batches(0, torch.Generator().manual_seed(0))
    assert len(batches) == len(LABELS) // 64
    for b in batches:
        assert b.shape == (64,) and b.dtype == torch.int64
        assert int(b.min()) >= 0 and int(b.max()) < len(LABELS)


@pytest.mark.parametrize("name", sorted(DATA_SAMPLERS))
def test_fewer_images_than_batch_size_gives_one_batch(name: str) -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    batches = DATA_SAMPLERS[name](labels, 32, 3).batches(0, torch.Generator().manual_seed(0))
    assert len(batches) == 1 and batches[0].shape == (6,)


def test_none_is_a_permutation_without_repeats() -> None:
    idx = torch.cat(DATA_SAMPLERS["none"](LABELS, 64, 1).batches(0, torch.Generator().manual_seed(0)))
    assert idx.unique().numel() == idx.numel()


@pytest.mark.parametrize("name", sorted(DATA_SAMPLERS))
def test_deterministic_given_generator_seed(name: str) -> None:
    plan = DATA_SAMPLERS[name](LABELS, 32, EPOCHS)
    a = plan.batches(3, torch.Generator().manual_seed(7))
    b = plan.batches(3, torch.Generator().manual_seed(7))
    c = plan.batches(3, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("name", sorted(DATA_SAMPLERS))
@pytest.mark.parametrize("bad", [1, 0, 2.5, True])
def test_rejects_bad_batch_size(name: str, bad: object) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        DATA_SAMPLERS[name](LABELS, bad, EPOCHS)


def test_class_proportions() -> None:
    epochs = range(8)
    none = class_share(DATA_SAMPLERS["none"](LABELS, 64, EPOCHS), epochs)
    weighted = class_share(DATA_SAMPLERS["weighted"](LABELS, 64, EPOCHS), epochs)
    balanced = class_share(DATA_SAMPLERS["balanced"](LABELS, 64, EPOCHS), epochs)
    sqrt = class_share(DATA_SAMPLERS["sqrt"](LABELS, 64, EPOCHS), epochs)
    assert torch.allclose(none, EMPIRICAL, atol=0.005)
    assert torch.allclose(weighted, UNIFORM, atol=0.012)
    assert torch.allclose(balanced, UNIFORM, atol=0.002)  # exact cycling, not chance
    expected_sqrt = EMPIRICAL.sqrt() / EMPIRICAL.sqrt().sum()
    assert torch.allclose(sqrt, expected_sqrt, atol=0.012)
    rare, common = 12, 10  # 6 vs 582 images
    assert none[rare] < sqrt[rare] < weighted[rare]
    assert none[common] > sqrt[common] > weighted[common]


def test_balanced_batches_hold_every_class_evenly() -> None:
    batches = DATA_SAMPLERS["balanced"](LABELS, 56, EPOCHS).batches(0, torch.Generator().manual_seed(0))
    for b in batches:  # 56 = 4 per class
        assert torch.equal(torch.bincount(LABELS[b], minlength=14), torch.full((14,), 4))


def test_balanced_reuses_rare_images_evenly() -> None:
    idx = torch.cat(
        DATA_SAMPLERS["balanced"](LABELS, 56, EPOCHS).batches(0, torch.Generator().manual_seed(0))
    )
    rare = idx[LABELS[idx] == 12]  # 6 images, ~190 draws: each image drawn about equally often
    uses = torch.bincount(rare).double()
    uses = uses[uses > 0]
    assert uses.numel() == 6 and uses.max() - uses.min() <= 1


def test_curriculum_moves_from_empirical_to_uniform() -> None:
    plan = DATA_SAMPLERS["curriculum"](LABELS, 64, EPOCHS)
    # average several independent draws of the same epoch for a tight estimate
    first = sum(class_share(plan, [0], seed=s) for s in range(6)) / 6
    last = sum(class_share(plan, [EPOCHS - 1], seed=s) for s in range(6)) / 6
    middle = sum(class_share(plan, [EPOCHS // 2], seed=s) for s in range(6)) / 6
    assert torch.allclose(first, EMPIRICAL, atol=0.012)
    assert torch.allclose(last, UNIFORM, atol=0.012)
    assert first[12] < middle[12] < last[12]
