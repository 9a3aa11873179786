"""Data samplers: which training images go into which batch, as index tensors only.

A data sampler (config key ``sampler``) is not an Optuna sampler: it decides the
class mix the network sees, nothing about the search. Each entry of ``DATA_SAMPLERS``
is a factory ``make(labels, batch_size, epochs) -> BatchPlan``; the plan hands out
one epoch of index batches at a time, deterministic given the ``torch.Generator``.

Every epoch has ``n // batch_size`` full batches (the ragged rest is dropped so
BatchNorm never sees a batch of one; ``n < batch_size`` gives one batch of ``n``).
Positions index the labels tensor given to the factory (the train subset), not the
whole data set. Classes absent from ``labels`` are simply never drawn.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fer_core.config_rules import REBALANCING_SAMPLERS  # noqa: F401  (its home: config time, no torch)
from fer_core.errors import ConfigError, DataError
from fer_core.registry import Registry

DATA_SAMPLERS = Registry("data sampler", "sampler")



class BatchPlan:
    """Base: validates inputs and knows the batch geometry; subclasses draw indices."""

    def __init__(self, labels: Tensor, batch_size: int, epochs: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
            raise ConfigError(f"batch_size: must be an integer >= 2 (BatchNorm needs 2+), got {batch_size!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs: must be an integer >= 1, got {epochs!r}")
        labels = torch.as_tensor(labels).detach().to("cpu", torch.int64)
        if labels.dim() != 1 or labels.numel() < 2:
            raise DataError(f"training split: need at least 2 labelled images, got {labels.numel()}")
        if int(labels.min()) < 0:
            raise DataError("training split: labels must be non-negative class indices")
        self.labels = labels
        self.n = labels.numel()
        self.epochs = epochs
        self.batch_size = min(batch_size, self.n)
        self.num_batches = self.n // self.batch_size
        # Present classes and per-sample class counts, shared by the weighted variants.
        counts = torch.bincount(labels)
        self.classes = torch.nonzero(counts, as_tuple=False).flatten()
        self.class_counts = counts[self.classes]  # (K,) counts of the present classes
        self.sample_count = counts[labels].double()  # (n,) n_{y_i}

    @property
    def num_draws(self) -> int:
        return self.num_batches * self.batch_size

    def batches(self, epoch: int, generator: torch.Generator) -> list[Tensor]:
        flat = self._draw(epoch, generator)
        return list(flat.view(self.num_batches, self.batch_size).unbind(0))

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class _WithReplacement(BatchPlan):
    """Draws ``num_draws`` positions i.i.d. with per-sample probability ``_probs(epoch)``."""

    def _probs(self, epoch: int) -> Tensor:
        raise NotImplementedError

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        return torch.multinomial(self._probs(epoch), self.num_draws, replacement=True, generator=generator)


@DATA_SAMPLERS.register("none")
class UniformPlan(BatchPlan):
    """Plain shuffle without replacement: every image at most once per epoch."""

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        return torch.randperm(self.n, generator=generator)[: self.num_draws]


@DATA_SAMPLERS.register("weighted")
class WeightedPlan(_WithReplacement):
    """p_i ∝ 1/n_{y_i}: every class equally likely (like WeightedRandomSampler)."""

    def _probs(self, epoch: int) -> Tensor:
        return 1.0 / self.sample_count


@DATA_SAMPLERS.register("sqrt")
class SqrtPlan(_WithReplacement):
    """p_i ∝ 1/sqrt(n_{y_i}): class mass ∝ sqrt(n_c), halfway (in log space) to balanced."""

    def _probs(self, epoch: int) -> Tensor:
        return self.sample_count.rsqrt()


@DATA_SAMPLERS.register("curriculum")
class CurriculumPlan(_WithReplacement):
    """Class mass moves linearly from empirical (epoch 0) to uniform (last epoch).

    With ``epochs == 1`` the only epoch is epoch 0, so it stays empirical.
    """

    def _probs(self, epoch: int) -> Tensor:
        a = min(max(epoch, 0) / max(self.epochs - 1, 1), 1.0)
        k = self.class_counts.numel()
        # mass_c = (1-a) n_c/n + a/K, spread evenly over the n_c images of class c
        per_image_uniform = 1.0 / (k * self.sample_count)
        return (1.0 - a) / self.n + a * per_image_uniform


@DATA_SAMPLERS.register("balanced")
class BalancedPlan(BatchPlan):
    """Each batch holds about equal numbers per class.

    The draw stream cycles through the classes (random class order per epoch); within a
    class, images come without replacement from a fresh shuffle, reshuffled whenever the
    class is exhausted (a 6-image class shows each image once per 6 draws of that
    class). Positions inside each batch are then shuffled, because timm's Mixup pairs
    sample i with sample B-1-i and a class-ordered batch would pair the same classes
    every time.
    """

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        k = self.classes.numel()
        order = torch.randperm(k, generator=generator)
        slot_class = order[torch.arange(self.num_draws) % k]  # class slot (0..K-1) of each draw
        out = torch.empty(self.num_draws, dtype=torch.int64)
        for slot in range(k):
            where = torch.nonzero(slot_class == slot, as_tuple=False).flatten()
            if where.numel() == 0:
                continue
            members = torch.nonzero(self.labels == self.classes[slot], as_tuple=False).flatten()
            passes = math.ceil(where.numel() / members.numel())
            # one independent shuffle per pass through the class, in a single call
            perms = torch.rand(passes, members.numel(), generator=generator).argsort(dim=1)
            out[where] = members[perms.flatten()[: where.numel()]]
        batches = out.view(self.num_batches, self.batch_size)
        within = torch.rand(self.num_batches, self.batch_size, generator=generator).argsort(dim=1)
        return batches.gather(1, within).flatten()
