from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from fer_core.errors import ConfigError, DataError
from fer_core.losses import (
    CLASS_WEIGHTED_LOSSES,
    LOSSES,
    check_double_weighting,
    effective_number_weights,
    reweights_classes,
)
from fer_core.registry import lookup

RAFCE_TRAIN = [394, 171, 109, 136, 71, 495, 120, 352, 24, 124, 582, 108, 6, 17]  # RAF-CE train counts
C = len(RAFCE_TRAIN)
EPOCHS = 10


def batch(b: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, C, generator=g) * 2
    labels = torch.randint(0, C, (b,), generator=g)
    return logits, labels, F.one_hot(labels, C).float()


def mixup(onehot: torch.Tensor, lam: float = 0.7) -> torch.Tensor:
    """Soft targets as timm's Mixup makes them: pair sample i with B-1-i."""
    return lam * onehot + (1 - lam) * onehot.flip(0)


def make(name: str, counts: list[int] = RAFCE_TRAIN, **params: Any):
    return lookup(LOSSES, name)({"loss": name, "seed": 3, **params}, counts, EPOCHS)


def test_registry_names() -> None:
    assert set(LOSSES) == {
        "ce", "weighted_ce", "focal", "class_balanced", "label_smoothing", "balanced_softmax", "ldam", "ldam_drw",
        "ldam_cosine", "ldam_drw_cosine",
    }  # fmt: skip
    assert CLASS_WEIGHTED_LOSSES <= set(LOSSES)
    with pytest.raises(ConfigError, match="loss"):
        lookup(LOSSES, "dice")


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("soft", [False, True], ids=["onehot", "mixup"])
@pytest.mark.parametrize("epoch", [0, EPOCHS - 1])
def test_every_loss_is_finite_scalar_and_backpropagates(name: str, soft: bool, epoch: int) -> None:
    logits, _, onehot = batch()
    target = mixup(onehot) if soft else onehot
    logits.requires_grad_(True)
    loss = make(name)(logits, target, epoch=epoch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_hard_labels_equal_one_hot(name: str) -> None:
    logits, labels, onehot = batch()
    loss = make(name)
    assert torch.allclose(loss(logits, labels), loss(logits, onehot))


def test_ce_matches_torch() -> None:
    logits, labels, onehot = batch()
    assert torch.allclose(make("ce")(logits, onehot), F.cross_entropy(logits, labels))


def test_ce_soft_matches_torch_probability_targets() -> None:
    logits, _, onehot = batch()
    target = mixup(onehot)
    assert torch.allclose(make("ce")(logits, target), F.cross_entropy(logits, target))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch(eps: float) -> None:
    logits, labels, onehot = batch()
    ours = make("label_smoothing", label_smoothing=eps)(logits, onehot)
    assert torch.allclose(ours, F.cross_entropy(logits, labels, label_smoothing=eps))


@pytest.mark.parametrize("soft", [False, True])
def test_focal_gamma_zero_is_ce(soft: bool) -> None:
    logits, _, onehot = batch()
    target = mixup(onehot) if soft else onehot
    assert torch.allclose(make("focal", focal_gamma=0.0)(logits, target), make("ce")(logits, target))


def test_focal_down_weights_easy_examples() -> None:
    logits, _, onehot = batch()
    assert make("focal", focal_gamma=2.0)(logits, onehot) < make("ce")(logits, onehot)


@pytest.mark.parametrize("scheme", ["inverse", "sqrt"])
def test_weighted_ce_with_balanced_counts_is_ce(scheme: str) -> None:
    logits, _, onehot = batch()
    counts = [50] * C
    for target in (onehot, mixup(onehot)):
        ours = make("weighted_ce", counts, class_weighting=scheme)(logits, target)
        assert torch.allclose(ours, make("ce")(logits, target))


def test_weighted_ce_matches_torch_weighted_mean() -> None:
    logits, labels, onehot = batch()
    w = 1 / torch.tensor(RAFCE_TRAIN, dtype=torch.float32)
    expected = F.cross_entropy(logits, labels, weight=w / w.mean())
    assert torch.allclose(make("weighted_ce", class_weighting="inverse")(logits, onehot), expected)


def test_class_balanced_weights() -> None:
    w = effective_number_weights(RAFCE_TRAIN, 0.999)
    assert w.sum().item() == pytest.approx(C)
    assert w.argmax() == 12 and w.argmin() == 10  # 6 images vs 582
    logits, labels, onehot = batch()
    expected = F.cross_entropy(logits, labels, weight=w)
    assert torch.allclose(make("class_balanced", cb_beta=0.999)(logits, onehot), expected)
    focal = make("class_balanced", cb_beta=0.999, cb_base="focal", focal_gamma=2.0)(logits, onehot)
    assert focal < expected


def test_balanced_softmax_pushes_toward_rare_classes() -> None:
    logits = torch.zeros(2, C, requires_grad=True)
    labels = torch.tensor([12, 10])  # rarest (6) and largest (582) class
    loss = make("balanced_softmax")
    ce = make("ce")
    rare, common = F.one_hot(labels, C).float().unbind(0)
    assert loss(logits[:1], rare[None]) > ce(logits[:1], rare[None])
    assert loss(logits[1:], common[None]) < ce(logits[1:], common[None])
    # gradient on the rare-class logit when the target is rare: stronger push up than CE
    g_bs = torch.autograd.grad(loss(logits[:1], rare[None]), logits)[0][0, 12]
    g_ce = torch.autograd.grad(ce(logits[:1], rare[None]), logits)[0][0, 12]
    assert g_bs < g_ce < 0


def test_balanced_softmax_tau_zero_is_ce() -> None:
    logits, _, onehot = batch()
    assert torch.allclose(
        make("balanced_softmax", logit_adjust_tau=0.0)(logits, onehot), make("ce")(logits, onehot)
    )


def test_ldam_margin_larger_for_rare_classes() -> None:
    loss = make("ldam")
    assert loss.margin.max().item() == pytest.approx(5 * 0.5)  # default ldam_scale 5
    assert loss.margin.argmax() == 12 and loss.margin.argmin() == 10
    logits = torch.zeros(1, C)
    rare, common = F.one_hot(torch.tensor([12]), C).float(), F.one_hot(torch.tensor([10]), C).float()
    assert loss(logits, rare) > loss(logits, common)  # same logits, the rare class needs a wider margin


def test_ldam_drw_weights_switch_on_at_drw_start() -> None:
    loss = make("ldam_drw", drw_start=0.5)
    assert loss.drw_epoch == 5
    assert loss.weight_at(4) is None
    assert torch.allclose(loss.weight_at(5), effective_number_weights(RAFCE_TRAIN, 0.9999))
    logits, _, onehot = batch()
    before, after = loss(logits, onehot, epoch=4), loss(logits, onehot, epoch=5)
    assert not torch.allclose(before, after)
    assert torch.allclose(before, make("ldam")(logits, onehot))


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("focal", {"focal_gamma": -1.0}, "focal_gamma"),
        ("focal", {"focal_gamma": "2"}, "focal_gamma"),
        ("focal", {"focal_alpha": "balanced"}, "focal_alpha"),
        ("class_balanced", {"cb_beta": 0.5}, "cb_beta"),
        ("class_balanced", {"cb_beta": 1.0}, "cb_beta"),
        ("class_balanced", {"cb_base": "bce"}, "cb_base"),
        ("weighted_ce", {"class_weighting": "log"}, "class_weighting"),
        ("label_smoothing", {"label_smoothing": 0.5}, "label_smoothing"),
        ("label_smoothing", {"label_smoothing": -0.1}, "label_smoothing"),
        ("balanced_softmax", {"logit_adjust_tau": float("nan")}, "logit_adjust_tau"),
        ("ldam", {"ldam_max_margin": 0.0}, "ldam_max_margin"),
        ("ldam", {"ldam_scale": -30}, "ldam_scale"),
        ("ldam_drw", {"drw_start": 0.0}, "drw_start"),
        ("ldam_drw", {"drw_start": 1.5}, "drw_start"),
        ("ldam_cosine", {"cosine_scale": 0.0}, "cosine_scale"),
        ("ldam_drw_cosine", {"drw_start": 0.0}, "drw_start"),
    ],
)
def test_bad_params_raise_config_error_naming_the_key(name: str, params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make(name, **params)


def test_losses_ignore_other_losses_keys() -> None:
    make("ce", focal_gamma=-1.0, cb_beta=5.0)  # not ce's keys: not validated here


@pytest.mark.parametrize("name", ["weighted_ce", "class_balanced", "balanced_softmax", "ldam", "ldam_drw"])
def test_empty_class_is_a_data_error(name: str) -> None:
    with pytest.raises(DataError):
        make(name, [10, 0, 5])


def test_reweights_classes() -> None:
    assert reweights_classes({"loss": "weighted_ce"})
    assert reweights_classes({"loss": "balanced_softmax"})
    assert not reweights_classes({"loss": "ce"})
    assert not reweights_classes({"loss": "ldam"})
    assert not reweights_classes({"loss": "focal", "focal_gamma": 2.0})
    assert reweights_classes({"loss": "focal", "focal_alpha": "sqrt"})


@pytest.mark.parametrize(
    ("config", "ok"),
    [
        ({"loss": "weighted_ce", "sampler": "weighted"}, False),
        ({"loss": "class_balanced", "sampler": "balanced"}, False),
        ({"loss": "focal", "focal_alpha": "inverse", "sampler": "sqrt"}, False),
        ({"loss": "ldam_drw", "sampler": "curriculum"}, False),
        ({"loss": "weighted_ce", "sampler": "weighted", "allow_double_weighting": True}, True),
        ({"loss": "ce", "sampler": "balanced"}, True),
        ({"loss": "focal", "sampler": "weighted"}, True),
        ({"loss": "weighted_ce", "sampler": "none"}, True),
        ({"loss": "weighted_ce"}, True),
    ],
)
def test_double_weighting_guard(config: dict, ok: bool) -> None:
    if ok:
        check_double_weighting(config)
    else:
        with pytest.raises(ConfigError, match=r"counted twice.*allow_double_weighting"):
            check_double_weighting(config)


def test_allow_double_weighting_must_be_bool() -> None:
    with pytest.raises(ConfigError, match="allow_double_weighting"):
        check_double_weighting(
            {"loss": "weighted_ce", "sampler": "weighted", "allow_double_weighting": "yes"}
        )
