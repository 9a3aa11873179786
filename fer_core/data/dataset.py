"""The in-memory data set every trial trains on.

All sources (RAF-CE release, manifest CSV, image folders, synthetic stand-in) are
decoded once into this shape and cached on disk by content fingerprint:
uint8 images (N,3,H,W), int64 labels (N,), float32 AU targets (N,18), int8 split ids
(0 train, 1 validation, 2 test).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from fer_core.errors import DataError

if TYPE_CHECKING:  # torch is imported where a tensor is made: the constants below are read by
    import torch  # torch-free commands (`validate` peeks at the data without decoding it)

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2
UNUSED = -1  # set aside (a CV trial: the source's test split; fer_core/data/folds.py)


def _stats() -> dict:
    return json.loads(resources.files("fer_core.resources").joinpath("rafce_label_stats.json").read_text())


RAFCE_STATS: dict = _stats()
RAFCE_CLASSES: tuple[str, ...] = tuple(RAFCE_STATS["classes"])
AU_VOCAB: tuple[int, ...] = tuple(RAFCE_STATS["au_vocabulary"])
AU_INDEX: dict[int, int] = {au: i for i, au in enumerate(AU_VOCAB)}


@dataclass
class FerDataset:
    images: torch.Tensor  # uint8 (N,3,H,W)
    labels: torch.Tensor  # int64 (N,)
    aus: torch.Tensor  # float32 (N, len(AU_VOCAB)); all zero when the source has no AUs
    split: torch.Tensor  # int8 (N,), TRAIN/VAL/TEST
    class_names: tuple[str, ...]
    fingerprint: str  # content hash of the source + decode settings
    has_aus: bool = True
    keys: tuple[str, ...] = ()  # per-image ids (file names), for reports
    info: dict = field(default_factory=dict)  # source summary (AU token kinds, ...)
    # float32 (N, C) class distributions trained on instead of one-hot labels (FER+ votes); ``labels``
    # stays the majority class, which metrics, samplers and class counts read
    soft_labels: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def indices(self, split: int) -> torch.Tensor:
        import torch

        return torch.nonzero(self.split == split, as_tuple=False).flatten()

    def subset_per_class(self, limits: dict[int, int]) -> FerDataset:
        """The first ``limits[split]`` images of every class in each split: a small copy with the
        same classes, for quick runs, tests and benchmarks (caps the long tail's head only)."""
        import torch

        keep = [
            torch.nonzero((self.split == s) & (self.labels == c)).flatten()[:n]
            for s, n in limits.items()
            for c in range(self.num_classes)
        ]
        k = torch.cat(keep).sort().values
        return FerDataset(
            images=self.images[k], labels=self.labels[k], aus=self.aus[k], split=self.split[k],
            class_names=self.class_names, fingerprint=f"{self.fingerprint}-subset{sorted(limits.items())}",
            has_aus=self.has_aus, keys=tuple(self.keys[i] for i in k.tolist()) if self.keys else (),
            info=dict(self.info), soft_labels=None if self.soft_labels is None else self.soft_labels[k],
        )

    def check_trainable(self, source: str) -> None:
        """Refuse, with one line, a data set no classifier can be trained and selected on: fewer than
        two classes with training images (the model would score 1.0 on one class), or no validation
        image (no epoch could be selected). Checked before anything is trained or stored."""
        check_trainable_counts(self.class_names, self.class_counts(TRAIN), len(self.indices(VAL)), source)

    def class_counts(self, split: int = TRAIN) -> list[int]:
        import torch

        y = self.labels[self.split == split]
        return torch.bincount(y, minlength=self.num_classes).tolist()


def check_trainable_counts(class_names: tuple[str, ...] | list[str], train_counts: list[int], n_val: int,
                           source: str) -> None:
    """``FerDataset.check_trainable`` on counts alone: ``validate`` refuses from the label files what
    ``launch`` refuses after decoding."""
    present = [name for name, n in zip(class_names, train_counts) if n > 0]
    if len(present) < 2:
        have = f"only class {present[0]!r} has" if present else "no class has"
        raise DataError(f"{source}: {have} training images; training needs at least 2 classes with "
                        "training images and at least one validation image")
    if n_val == 0:
        raise DataError(f"{source}: no validation images; training needs at least 2 classes with "
                        "training images and at least one validation image")
