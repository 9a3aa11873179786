"""What every reader returns before decoding: image paths plus parsed targets.

``cache.build_dataset`` turns a ``RawSource`` into a ``FerDataset``: it fingerprints the
label files and image bytes, then decodes the images once (or loads them from the cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_core.errors import DataError


@dataclass
class RawSource:
    kind: str  # "rafce" | "manifest" | "folder" (the synthetic stand-in is read as "rafce")
    root: Path
    paths: list[Path]  # one image file per sample
    labels: np.ndarray  # int64 (N,)
    aus: np.ndarray  # float32 (N, len(AU_VOCAB)), zeros when has_aus is False
    split: np.ndarray  # int8 (N,)
    class_names: tuple[str, ...]
    keys: tuple[str, ...]
    has_aus: bool
    label_files: list[Path] = field(default_factory=list)  # hashed into the fingerprint
    info: dict = field(default_factory=dict)  # source summary, JSON-able (goes into the cache)
    fingerprint_extra: dict = field(default_factory=dict)  # reader settings that change the result
    # face boxes (N,4) x0, y0, x1, y1 in the image's pixels, cropped at decode (AffectNet, ExpW); None: whole image
    boxes: np.ndarray | None = None
    # images held in a label file, not in image files (FER2013's pixel column): called on a cache miss only,
    # returns uint8 (N,H,W) grey or (N,H,W,3); ``paths`` is then empty and the label files carry the content
    pixels: Callable[[], np.ndarray] | None = None
    # per-image class distributions (N,C) float32 (FER+ votes, ``ferplus_labels: soft``); None: one-hot labels
    soft_labels: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __post_init__(self) -> None:
        # a name that is not UTF-8 (undecodable bytes become lone surrogates in Python) cannot be
        # fingerprinted, shown or stored as text; refuse it here, once for every reader, naming it by repr
        for what, names in (("image file", map(str, self.paths)), ("class", self.class_names), ("key", self.keys)):
            for name in names:
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise DataError(f"the {what} name {name!r} (in {str(self.root)!r}) is not UTF-8; rename it (data names "
                                    "are stored and shown as text)") from None


def check_train_classes(raw: RawSource) -> None:
    """Every class has a training image (numpy only: ``validate`` runs it without torch)."""
    counts = np.bincount(raw.labels[raw.split == 0], minlength=len(raw.class_names))  # 0: TRAIN (data.dataset)
    for name, n in zip(raw.class_names, counts):
        if n == 0:
            raise DataError(f"{raw.root}: class {name!r} has no training images")
