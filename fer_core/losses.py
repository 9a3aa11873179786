"""Emotion losses for long-tailed FER, all on soft (probability) targets.

Each entry of ``LOSSES`` is a factory ``make(params, class_counts, epochs) ->
EmotionLoss``; ``params`` is the flat trial config and each loss reads only its own
keys. ``EmotionLoss.forward(logits (B,C), target (B,C), epoch=0)`` returns a scalar.
Targets are probability rows (one-hot without MixUp, mixed rows from timm's
Mixup/CutMix); an int64 label vector (B,) is accepted too and one-hot encoded.

Conventions shared by every loss:
- Computed in float32 whatever the logits dtype (AMP-safe).
- Class weights w_c use a weighted mean over the batch, like
  ``F.cross_entropy(weight=w)``: sum_b sum_c w_c t_bc l_bc / sum_b sum_c w_c t_bc,
  so the loss scale matches plain CE and equal counts give exactly CE.
- Logit adjustments (balanced_softmax, ldam) act in training only: predict with the
  raw logits, which is what makes them balanced.
- Deferred re-weighting (DRW for any loss, config ``defer_weighting``/``defer_start``,
  fer_core/stages.py): ``EmotionLoss.defer`` gives a loss class weights that switch on at an
  epoch; they multiply whatever weights the loss has of its own (the double-weighting guard
  refuses that product unless ``allow_double_weighting``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the config-time rules live without torch (validate answers without importing it); re-exported here
from fer_core.config_rules import (  # noqa: F401
    CLASS_WEIGHTED_LOSSES,
    HEAD_OF_LOSS,
    WEIGHTINGS,
    check_double_weighting,
    check_head,
    reweights_classes,
)
from fer_core.errors import ConfigError, DataError
from fer_core.registry import Registry

LOSSES = Registry("loss", "loss")

# LDAM with its own deferred re-weighting from drw_start (a schedule switch: fer_core/stages.py)
DRW_LOSSES: frozenset[str] = frozenset({"ldam_drw", "ldam_drw_cosine"})
DRW_BETA = 0.9999  # Cao et al. use the effective-number weights with this beta for DRW


# ---------------------------------------------------------------- param reading


def _number(
    params: Mapping[str, Any],
    key: str,
    default: float,
    lo: float,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Read a real number and check it lies in the (half-)open interval, or raise ConfigError."""
    value = params.get(key, default)
    left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
    allowed = f"a number in {left}{lo}, {'inf' if hi == math.inf else hi}{right}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")
    too_low = value <= lo if lo_open else value < lo
    too_high = value >= hi if hi_open else value > hi
    if too_low or too_high:
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")
    return float(value)


def _choice(params: Mapping[str, Any], key: str, default: str, allowed: Sequence[str]) -> str:
    value = params.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _counts(class_counts: Sequence[int]) -> Tensor:
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() < 2:
        raise DataError(f"class counts: need 2+ classes, got {list(class_counts)}")
    empty = torch.nonzero(counts <= 0, as_tuple=False).flatten().tolist()
    if empty:
        raise DataError(f"class counts: classes {empty} have no training images; class-aware losses need 1+")
    return counts


# ---------------------------------------------------------------- class weights


def class_weights(class_counts: Sequence[int], scheme: str) -> Tensor:
    """Class weights 1/n_c ("inverse") or 1/sqrt(n_c) ("sqrt"), normalised to mean 1."""
    counts = _counts(class_counts)
    w = 1.0 / counts if scheme == "inverse" else counts.rsqrt()
    return (w / w.mean()).float()


def effective_number_weights(class_counts: Sequence[int], beta: float) -> Tensor:
    """Cui et al. 2019: (1-beta)/(1-beta^n_c), normalised to sum C."""
    counts = _counts(class_counts)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (w * counts.numel() / w.sum()).float()


# ---------------------------------------------------------------- the losses


def soft_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, gamma: float = 0.0
) -> Tensor:
    """-sum_c w_c t_c (1-p_c)^gamma log p_c, mean over the batch (weighted mean with w)."""
    logp = F.log_softmax(logits.float(), dim=1)
    t = target.float()
    terms = -t * logp
    if gamma > 0:
        # 1-p via expm1 is exact near p=1; the floor keeps the pow gradient finite for gamma<1
        terms = terms * (-torch.expm1(logp)).clamp_min(1e-12).pow(gamma)
    if weight is None:
        return terms.sum(dim=1).mean()
    w = weight.to(device=terms.device, dtype=terms.dtype)
    return (terms * w).sum() / (t * w).sum().clamp_min(1e-12)


class EmotionLoss(nn.Module):
    """Base class: ``forward(logits, target, epoch=0)`` -> scalar; see the module doc."""

    num_classes: int

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("defer_weight", None)
        self.defer_epoch = 0

    def defer(self, weight: Tensor, epoch: int) -> EmotionLoss:
        """Class weights ``weight`` from ``epoch`` on (deferred re-weighting); returns self."""
        if weight.shape != (self.num_classes,):
            raise ValueError(f"deferred weights: expected {self.num_classes} classes, got {tuple(weight.shape)}")
        self.defer_weight = weight.float()
        self.defer_epoch = int(epoch)
        return self

    def own_weight(self, epoch: int) -> Tensor | None:
        """The loss's own class weights at ``epoch`` (None: unweighted)."""
        return None

    def weight_at(self, epoch: int) -> Tensor | None:
        """The class weights used at ``epoch``: the loss's own times the deferred ones once on."""
        own = self.own_weight(epoch)
        if self.defer_weight is None or epoch < self.defer_epoch:
            return own
        return self.defer_weight if own is None else own * self.defer_weight

    def forward(self, logits: Tensor, target: Tensor, epoch: int = 0) -> Tensor:
        if target.dim() == 1:  # hard labels (e.g. validation) -> one-hot
            target = F.one_hot(target.long(), logits.shape[1])
        if target.shape != logits.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != logits shape {tuple(logits.shape)}")
        return self.compute(logits, target.float(), epoch)

    def compute(self, logits: Tensor, target: Tensor, epoch: int) -> Tensor:
        raise NotImplementedError


class SoftTargetLoss(EmotionLoss):
    """CE / weighted CE / focal / class-balanced / label smoothing: one formula."""

    def __init__(
        self, num_classes: int, weight: Tensor | None = None, gamma: float = 0.0, smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.gamma = gamma
        self.smoothing = smoothing
        self.register_buffer("weight", weight)

    def own_weight(self, epoch: int) -> Tensor | None:
        return self.weight

    def compute(self, logits: Tensor, target: Tensor, epoch: int) -> Tensor:
        if self.smoothing > 0:
            target = (1.0 - self.smoothing) * target + self.smoothing / self.num_classes
        return soft_cross_entropy(logits, target, self.weight_at(epoch), self.gamma)


class LogitAdjustedLoss(EmotionLoss):
    """Balanced softmax / logit adjustment (Ren et al. 2020, Menon et al. 2021).

    Trains on logits + tau*log(prior): frequent classes get a head start during
    training, so the raw logits must make up for rare classes on their own.
    """

    def __init__(self, class_counts: Sequence[int], tau: float) -> None:
        super().__init__()
        counts = _counts(class_counts)
        self.num_classes = counts.numel()
        self.register_buffer("adjust", (tau * torch.log(counts / counts.sum())).float())

    def compute(self, logits: Tensor, target: Tensor, epoch: int) -> Tensor:
        return soft_cross_entropy(logits.float() + self.adjust.to(logits.device), target, self.weight_at(epoch))


class LDAMLoss(EmotionLoss):
    """LDAM (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
    Loss", NeurIPS 2019), optionally with deferred re-weighting (DRW).

    Margins m_c ∝ n_c^(-1/4), the largest equal to ``ldam_max_margin``. The paper
    subtracts m_y from the true-class cosine logit and multiplies all logits by s = 30.
    We read the logits as the scaled ones and subtract s*m_c in logit units:
    - ``ldam_cosine`` / ``ldam_drw_cosine`` (the published configuration, ``head: cosine``):
      the head outputs s*cos (fer_core/models.py CosineHead, s = ``cosine_scale``), so
      s*cos - s*m_y = s*(cos - m_y), the paper's formula;
    - ``ldam`` / ``ldam_drw`` (not the paper's: LDAM margins on a plain linear head): the
      logits are on a free scale the network learns, and s = ``ldam_scale`` (default 5) only
      sets the margin's size against it.
    For soft targets the margin is spread by target mass: logits - s * m_c * t_c (one-hot:
    exactly the paper's margin on the true class; a 50/50 MixUp row gets half margins on
    both; the reference code takes hard labels only). With DRW, effective-number weights
    (beta 0.9999, the paper's) switch on at ``drw_epoch`` (the paper: epoch 160 of 200).
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        max_margin: float,
        scale: float,
        drw_weight: Tensor | None = None,
        drw_epoch: int = 0,
    ) -> None:
        super().__init__()
        counts = _counts(class_counts)
        self.num_classes = counts.numel()
        m = counts.pow(-0.25)
        self.register_buffer("margin", (scale * max_margin * m / m.max()).float())
        self.register_buffer("drw_weight", drw_weight)
        self.drw_epoch = drw_epoch

    def own_weight(self, epoch: int) -> Tensor | None:
        """The DRW weights from ``drw_epoch`` on (None = plain, before DRW starts)."""
        if self.drw_weight is None or epoch < self.drw_epoch:
            return None
        return self.drw_weight

    def compute(self, logits: Tensor, target: Tensor, epoch: int) -> Tensor:
        z = logits.float() - self.margin.to(logits.device) * target
        return soft_cross_entropy(z, target, self.weight_at(epoch))


# ---------------------------------------------------------------- registry


@LOSSES.register("ce")
def make_ce(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    return SoftTargetLoss(len(class_counts))


@LOSSES.register("weighted_ce")
def make_weighted_ce(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    scheme = _choice(params, "class_weighting", "inverse", WEIGHTINGS)
    return SoftTargetLoss(len(class_counts), weight=class_weights(class_counts, scheme))


@LOSSES.register("focal")
def make_focal(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    gamma = _number(params, "focal_gamma", 2.0, 0.0)
    alpha = _choice(params, "focal_alpha", "none", ("none", *WEIGHTINGS))
    weight = None if alpha == "none" else class_weights(class_counts, alpha)
    return SoftTargetLoss(len(class_counts), weight=weight, gamma=gamma)


@LOSSES.register("class_balanced")
def make_class_balanced(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    beta = _number(params, "cb_beta", 0.999, 0.9, 0.99999)  # default as in config.py
    base = _choice(params, "cb_base", "ce", ("ce", "focal"))
    gamma = _number(params, "focal_gamma", 2.0, 0.0) if base == "focal" else 0.0
    return SoftTargetLoss(len(class_counts), weight=effective_number_weights(class_counts, beta), gamma=gamma)


@LOSSES.register("label_smoothing")
def make_label_smoothing(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    eps = _number(params, "label_smoothing", 0.1, 0.0, 0.5, hi_open=True)
    return SoftTargetLoss(len(class_counts), smoothing=eps)


@LOSSES.register("balanced_softmax")
def make_balanced_softmax(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    return LogitAdjustedLoss(class_counts, _number(params, "logit_adjust_tau", 1.0, 0.0))


def _ldam_params(params: Mapping[str, Any]) -> tuple[float, float]:
    max_margin = _number(params, "ldam_max_margin", 0.5, 0.0, lo_open=True)
    scale = _number(params, "ldam_scale", 5.0, 0.0, lo_open=True)
    return max_margin, scale


def _ldam_cosine_params(params: Mapping[str, Any]) -> tuple[float, float]:
    # the margin's scale is the cosine head's s: logits s*cos become s*(cos - m)
    max_margin = _number(params, "ldam_max_margin", 0.5, 0.0, lo_open=True)
    return max_margin, _number(params, "cosine_scale", 30.0, 0.0, lo_open=True)


def drw_epoch(params: Mapping[str, Any], epochs: int) -> int:
    """The first epoch of ldam_drw's re-weighting; drw_start 1.0 -> epochs: it never starts (plain LDAM)."""
    return int(_number(params, "drw_start", 0.8, 0.0, 1.0, lo_open=True) * epochs)


def _drw(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> dict[str, Any]:
    return {"drw_weight": effective_number_weights(class_counts, DRW_BETA), "drw_epoch": drw_epoch(params, epochs)}


@LOSSES.register("ldam")
def make_ldam(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    """LDAM margins on a linear head (scale ldam_scale, default 5), not the paper's cosine head."""
    return LDAMLoss(class_counts, *_ldam_params(params))


@LOSSES.register("ldam_drw")
def make_ldam_drw(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    """ldam + DRW from drw_start, on a linear head (not the paper's cosine head)."""
    return LDAMLoss(class_counts, *_ldam_params(params), **_drw(params, class_counts, epochs))


@LOSSES.register("ldam_cosine")
def make_ldam_cosine(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    """LDAM as published (Cao et al. 2019): cosine head, s = cosine_scale (30), max margin 0.5."""
    return LDAMLoss(class_counts, *_ldam_cosine_params(params))


@LOSSES.register("ldam_drw_cosine")
def make_ldam_drw_cosine(params: Mapping[str, Any], class_counts: Sequence[int], epochs: int) -> EmotionLoss:
    """LDAM-DRW as published: the cosine head, and effective-number weights from drw_start."""
    return LDAMLoss(class_counts, *_ldam_cosine_params(params), **_drw(params, class_counts, epochs))


# ---------------------------------------------------------------- double weighting


def attention_prior_loss(attention: Tensor, au_target: Tensor) -> Tensor:
    """The weak AU-location prior of ``head: au_attention`` (config ``au_attention_prior``): RAF-CE has
    AU labels but no landmarks, so the only location known is the face half of each active AU (upper
    face 1, 2, 4, 5, 6, 7; lower 9-27, ``fer_core.cam.UPPER``). Per image with an active AU, the squared
    difference between the attention mass in the upper half (rows < H/2, an odd middle row half) and
    the share of its active AUs that are upper-face ones; mean over those images (0 when none has one).
    ``au_target`` may be soft (mixup): its values weigh the AUs."""
    from fer_core.cam import UPPER

    h = attention.shape[1]
    rows = attention.float().sum(dim=2)
    upper_mass = rows[:, : h // 2].sum(dim=1) + (rows[:, h // 2] / 2 if h % 2 else 0.0)
    upper = torch.as_tensor(UPPER, device=au_target.device)
    active = au_target.float().sum(dim=1)
    has = active > 0
    if not has.any():
        return attention.sum() * 0.0  # keeps the graph (and the dtype) without a contribution
    target = au_target.float()[:, upper].sum(dim=1)[has] / active[has]
    return ((upper_mass[has] - target) ** 2).mean()
