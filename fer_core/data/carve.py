"""Carving a held-out split out of a pool, for releases that publish none (RAF-DB and AffectNet have no
validation split; ExpW and CK+ have no split at all).

- stratified by class: each class gives about the same fraction (scikit-learn's splitters);
- seeded (``data_seed``): the same seed carves the same images;
- disjoint by group where the release names one (CK+'s subject in the file name): all images of one
  subject fall on one side (``StratifiedGroupKFold``, so the fraction is about 1/round(1/fraction));
- a class too small to spare an image (``count * fraction < 1``) stays whole in the pool it was carved
  from, and the carve says so with its count (``data inspect`` prints it): a class with 3 images would
  otherwise lose one of them to validation, or none, at the whim of the seed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from fer_core.errors import ConfigError


@dataclass
class Carve:
    """What one carve did, for ``data inspect`` and the report's header."""

    into: str  # "val" | "test"
    fraction: float
    carved: int = 0
    kept_whole: dict[str, int] = field(default_factory=dict)  # class name -> its images, none carved

    def line(self) -> str:
        kept = (f"; kept whole in training (too few to spare at {self.fraction:g}): "
                + ", ".join(f"{c} ({n})" for c, n in self.kept_whole.items())) if self.kept_whole else ""
        return f"{self.into} carved: {self.carved} images ({self.fraction:g} of each class){kept}"


def carve(split: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], source: int, target: int,
          fraction: float, seed: int, groups: np.ndarray | None = None) -> Carve:
    """Move about ``fraction`` of every class's images with split id ``source`` to ``target`` (in place)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"carving a split: fraction {fraction} must be in (0, 1)")
    from fer_core.data.dataset import SPLITS

    report = Carve(into=SPLITS[target], fraction=fraction)
    pool = np.flatnonzero(split == source)
    y = labels[pool]
    counts = np.bincount(y, minlength=len(class_names))
    small = [c for c in range(len(class_names)) if 0 < counts[c] and counts[c] * fraction < 1]
    report.kept_whole = {class_names[c]: int(counts[c]) for c in small}
    if groups is not None:
        # a subject with an image of a too-small class stays in the pool whole: carving its other
        # images would still be subject-disjoint, but moving back only the small class's would not
        held = np.isin(groups[pool], np.unique(groups[pool][np.isin(y, small)]))
    else:
        held = np.isin(y, small)
    cand = pool[~held]
    if len(cand) == 0:
        return report
    yc = labels[cand]
    if groups is None:
        from sklearn.model_selection import train_test_split

        n_take = max(round(len(cand) * fraction), len(np.unique(yc)))
        if n_take >= len(cand):
            return report
        _, taken = train_test_split(cand, test_size=n_take, stratify=yc, random_state=seed)
    else:
        from sklearn.model_selection import StratifiedGroupKFold

        k = max(2, round(1 / fraction))
        if len(np.unique(groups[cand])) < k:
            return report
        with warnings.catch_warnings():  # a class on fewer subjects than folds: sklearn warns, we report counts
            warnings.simplefilter("ignore", UserWarning)
            folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            _, fold = next(folds.split(cand, yc, groups[cand]))
        taken = cand[fold]
    split[taken] = target
    report.carved = len(taken)
    return report
