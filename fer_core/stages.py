"""Schedule switches of one training run: deferred re-sampling / re-weighting, and stage 2.

Two switches of the same trainable (``fer_core/train.py``), both config keys:

- **Deferred re-sampling / re-weighting** (DRS / DRW, generalised from LDAM-DRW to any loss;
  Cao et al., NeurIPS 2019, section 3.3; BagofTricks-LT, Zhang et al., AAAI 2021): from epoch
  ``deferred_epoch(cfg)`` = max(1, int(``defer_start`` * ``epochs``)) the data sampler becomes
  ``defer_sampler`` (DRS) and/or the loss is multiplied by class weights ``defer_weighting``
  (DRW: ``effective`` = Cui et al.'s effective-number weights with beta 0.9999, as Cao et al.;
  ``inverse``, ``sqrt``). The features are learnt on the natural class mix first, the
  re-balancing comes late, when it moves the decision boundaries more than the features.
- **Stage 2** (Kang et al., "Decoupling Representation and Classifier for Long-Tailed
  Recognition", ICLR 2020): after the ``epochs`` of stage 1, from stage 1's selected weights,
  ``stage2_epochs`` more epochs train only the classifier with the ``stage2_sampler`` data
  sampler (class-balanced by default, as the paper), the backbone frozen (its weights bit-
  identical, BatchNorm statistics too: the whole network runs in eval mode). ``STAGE2``:
  ``crt`` re-initialises the emotion head and trains it (classifier re-training); ``lws``
  keeps the head and learns one scale per class of its logits (learnable weight scaling; the
  paper scales the weight vectors, which for a linear head is the same up to the bias, which
  we scale too). Stage-2 epochs continue the epoch count (stage 2's first epoch is
  ``epochs``), are reported like stage 1's, and stage 2 selects its own epoch on validation.
  Where we differ from the paper: AdamW with our cosine schedule (no warmup) at the same
  ``lr``, not SGD; the stage-1 loss is kept (CE for the paper's cRT), and the augmentation
  and MixUp settings of stage 1 too.

``schedule_settled_epoch(cfg)``: the first epoch at which every switch of the run has acted;
a pruner must not judge a trial on an earlier epoch (``fer_core/study/bridge.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from fer_core.config_rules import SETTLED_KEY  # noqa: F401  (the study layer reads it without torch)
from fer_core.losses import (
    DRW_BETA,
    DRW_LOSSES,
    EmotionLoss,
    class_weights,
    drw_epoch,
    effective_number_weights,
)
from fer_core.registry import Registry, lookup
from fer_core.sampling import DATA_SAMPLERS, BatchPlan

STAGE2 = Registry("stage-2 method", "stage2")


class TrainConfig(Protocol):
    """The fields of ``fer_core.config.TrainConfig`` read here (config.py imports this module to
    check ``stage2`` names, so this one cannot import config.py)."""

    loss: str
    sampler: str
    batch_size: int
    epochs: int
    defer_start: float
    defer_sampler: str
    defer_weighting: str
    stage2: str
    stage2_epochs: int
    stage2_sampler: str

    def model_dump(self) -> dict[str, Any]: ...




# ---------------------------------------------------------------- when the switches happen


def deferred_epoch(cfg: TrainConfig) -> int | None:
    """The first epoch of the deferred sampler / weights (None: no deferred switch)."""
    if cfg.defer_start == 0:
        return None
    return max(1, int(cfg.defer_start * cfg.epochs))


def total_epochs(cfg: TrainConfig) -> int:
    """Stage 1's epochs plus stage 2's."""
    return cfg.epochs + (cfg.stage2_epochs if cfg.stage2 != "none" else 0)


def _stage1_switches(cfg: TrainConfig) -> list[int]:
    """Stage 1's schedule switches (DRW start, deferred sampler or weights), with 0 for "none"."""
    switches = [0]
    if cfg.loss in DRW_LOSSES:
        switches.append(drw_epoch(cfg.model_dump(), cfg.epochs))
    if deferred_epoch(cfg) is not None:
        switches.append(deferred_epoch(cfg))
    return switches


def first_selectable_epoch(cfg: TrainConfig) -> int:
    """Stage 1's first epoch validation may select: the epoch of its last switch (DRW start, deferred
    sampler or weights), 0 without one. A deferred method is the model after its switch: an epoch
    before it is plain training of another recipe, and selecting it would report CE as DRS (seen on
    the digits: every DRS trial selected a pre-switch epoch, identical to its plain-CE twin)."""
    return max(e for e in _stage1_switches(cfg) if e < cfg.epochs)


def schedule_settled_epoch(cfg: TrainConfig) -> int:
    """The epoch whose report is the first after the run's last schedule switch (DRW start, deferred
    sampler or weights, stage 2) has trained one epoch; 0 for a run without switches. A switch at
    or after the last epoch never happens (``drw_start: 1.0``) and does not count."""
    switches = _stage1_switches(cfg) + ([cfg.epochs] if cfg.stage2 != "none" else [])
    return max(e for e in switches if e < total_epochs(cfg))


# ---------------------------------------------------------------- the data sampler by epoch


class SamplerSchedule:
    """The data sampler of each epoch: ``sampler``, then ``defer_sampler`` from the deferred
    epoch (DRS), then ``stage2_sampler`` in stage 2. Every plan draws ``n // batch_size``
    batches, so the optimizer's steps per epoch never change."""

    def __init__(self, cfg: TrainConfig, labels: Tensor) -> None:
        self.cfg, self.labels = cfg, labels
        self._plans: dict[str, BatchPlan] = {}
        self.steps_per_epoch = len(self.plan(cfg.sampler).batches(0, torch.Generator().manual_seed(0)))

    def name_at(self, epoch: int) -> str:
        cfg, at = self.cfg, deferred_epoch(self.cfg)
        if cfg.stage2 != "none" and epoch >= cfg.epochs:
            return cfg.stage2_sampler
        if at is not None and epoch >= at and cfg.defer_sampler != "keep":
            return cfg.defer_sampler
        return cfg.sampler

    def plan(self, name: str) -> BatchPlan:
        if name not in self._plans:  # curriculum ramps over stage 1's epochs whichever phase uses it
            self._plans[name] = lookup(DATA_SAMPLERS, name)(self.labels, self.cfg.batch_size, self.cfg.epochs)
        return self._plans[name]

    def batches(self, epoch: int, generator: torch.Generator) -> list[Tensor]:
        return self.plan(self.name_at(epoch)).batches(epoch, generator)


# ---------------------------------------------------------------- deferred class weights


def deferred_weights(cfg: TrainConfig, class_counts: list[int]) -> Tensor | None:
    """The DRW class weights of ``defer_weighting`` (mean 1 like every class weight here; the
    weighted mean of the loss makes the normalisation irrelevant)."""
    if deferred_epoch(cfg) is None or cfg.defer_weighting == "none":
        return None
    if cfg.defer_weighting == "effective":
        return effective_number_weights(class_counts, DRW_BETA)
    return class_weights(class_counts, cfg.defer_weighting)


def with_deferred_weights(loss: EmotionLoss, cfg: TrainConfig, class_counts: list[int]) -> EmotionLoss:
    """``loss`` with its deferred class weights (DRW for any loss), if the config asks for them."""
    w = deferred_weights(cfg, class_counts)
    return loss if w is None else loss.defer(w, deferred_epoch(cfg))


# ---------------------------------------------------------------- stage 2


@STAGE2.register("none")
def no_stage2(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    raise RuntimeError("stage2 'none' has no stage 2 to begin")  # never called: train_fer checks


@STAGE2.register("crt")
def classifier_retraining(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """cRT: a fresh emotion head (same init as stage 1's), the only thing stage 2 trains."""
    model.emotion_head.reset_parameters()
    return [(f"emotion_head.{n}", p) for n, p in model.emotion_head.named_parameters()]


@STAGE2.register("lws")
def learnable_weight_scaling(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """LWS: the head stays as stage 1 left it; one learnable scale per class (starting at 1)
    multiplies its logits, and only the scales train."""
    return [("emotion_scale", model.add_class_scales())]


def begin_stage2(cfg: TrainConfig, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Freeze the whole network, set up the stage-2 method's parameters and return them (named):
    the only ones stage 2's optimizer gets."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = lookup(STAGE2, cfg.stage2)(model)
    for _, p in trainable:
        p.requires_grad_(True)
    return trainable


def stage2_lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Stage 2's schedule per optimizer step: cosine from ``lr`` to 1 % of it, no warmup."""
    total = max(1, cfg.stage2_epochs * steps_per_epoch)
    return lambda step: 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))


def stage_mode(model: nn.Module, stage: int) -> None:
    """Stage 1 trains the network (train mode); stage 2 keeps BatchNorm statistics and dropout of
    the frozen backbone as stage 1 left them: the whole network runs in eval mode (the heads have
    no mode-dependent layers)."""
    model.train(stage == 1)


def stage_summary(best: dict[str, Any]) -> dict[str, Any]:
    """What a result and a checkpoint keep of stage 1 once stage 2 has begun."""
    return {"best_epoch": best["epoch"], "score": best["score"], "val": best["val"]}
