"""k-fold cross-validation over the train+validation pool, scored out of fold (config ``cv_folds``,
``cv_fold``, ``cv_repeat``, ``cv_group_by``).

The pool (the source's train and validation images) is cut into ``cv_folds`` stratified folds
(sklearn ``StratifiedKFold``, or ``StratifiedGroupKFold`` when images are grouped). In the trial
of fold ``f``:
- fold ``f`` is held out: it becomes the evaluated split (``TEST`` code), scored once at the
  selected epoch, never used to pick anything;
- fold ``(f + 1) % k`` is the inner validation split that selects the epoch;
- the other ``k - 2`` folds train (hence ``cv_folds >= 3``);
- the source's own test split is set aside (``UNUSED``): a CV study's evidence is the pooled
  out-of-fold predictions, every pool image predicted once per (seed, repeat) by a model that
  neither trained on it nor selected on it (the report pools the k fold trials).

The partition is drawn from ``(data_seed, seed, cv_repeat)`` (``partition_seed``): the trials of
one (seed, repeat) across every variant share it, so variants stay paired image by image, while
two units (seeds, or repeats of one seed: ``cv.repeats``, repeated stratified k-fold) are
independent draws of the partition as well as of the training randomness, which is what the
report's seed variance part assumes.

Grouping (``cv_group_by``) keeps all images of one group (a subject, a source video) in one
fold, so a model is never validated or scored on a face it trained on:
- ``none``: no grouping;
- ``re:<regex>``: a pattern over the image keys (file names); the group is the first
  capture group, else the whole match (``re:^(s\\d+)_`` for ``s012_0003.jpg``);
- any other name: that column of a manifest CSV (``subject``, ``video``...).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from fer_core.config_rules import check_group_by  # noqa: F401  (config time, no torch)
from fer_core.data.dataset import TEST, TRAIN, UNUSED, VAL, FerDataset
from fer_core.errors import ConfigError, DataError


def image_groups(ds: FerDataset, group_by: str) -> np.ndarray | None:
    """One group id per image (None without grouping); a DataError names what is missing."""
    if group_by == "none":
        return None
    if group_by.startswith("re:"):
        pattern = re.compile(group_by[3:])
        if not ds.keys:
            raise DataError(f"cv_group_by {group_by!r}: this data set has no image file names to match")
        out = []
        for key in ds.keys:
            m = pattern.search(key)
            if m is None:
                raise DataError(f"cv_group_by {group_by!r}: image {key!r} does not match the pattern")
            out.append(m.group(1) if m.groups() else m.group(0))
        return np.asarray(out)
    columns = ds.info.get("columns") or {}
    if group_by not in columns:
        have = ", ".join(sorted(columns)) or "none (only manifest CSVs carry extra columns)"
        raise DataError(f"cv_group_by {group_by!r}: no such column in the data source; extra columns: {have}")
    return np.asarray(columns[group_by])


def assign_folds(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> np.ndarray:
    """Fold id (0..folds-1) per image: stratified by label, whole groups per fold when grouped."""
    if groups is not None and len(set(groups.tolist())) < folds:
        raise DataError(f"cv: {folds} folds need at least {folds} groups, the data has {len(set(groups.tolist()))}")
    splitter = (StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed) if groups is not None
                else StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))
    out = np.full(len(labels), -1, dtype=np.int64)
    x = np.zeros((len(labels), 1))
    for f, (_train, held) in enumerate(splitter.split(x, labels, groups)):
        out[held] = f
    return out


def partition_seed(data_seed: int, seed: int, repeat: int) -> int:
    """The fold partition's random state for one (seed, repeat) unit (shared by every variant)."""
    return int(np.random.SeedSequence([data_seed, seed, repeat]).generate_state(1)[0])


def fold_dataset(ds: FerDataset, folds: int, fold: int, group_by: str = "none", seed: int = 0) -> FerDataset:
    """``ds`` re-split for fold ``fold`` of ``folds`` (partition random state ``seed``): that fold
    held out as ``TEST``, the next fold ``VAL``, the rest ``TRAIN``, the source's test ``UNUSED``."""
    if folds < 3:
        raise ConfigError(f"cv_folds: {folds}; out-of-fold scoring needs at least 3 folds (one held out, "
                          "one selecting the epoch, the rest training)")
    if not 0 <= fold < folds:
        raise ConfigError(f"cv_fold: {fold} must be in 0..{folds - 1}")
    pool = torch.nonzero(ds.split != TEST).flatten().numpy()
    groups = image_groups(ds, group_by)
    fold_of = assign_folds(ds.labels.numpy()[pool], None if groups is None else groups[pool], folds, seed)
    split = torch.full_like(ds.split, UNUSED)
    code = np.where(fold_of == fold, TEST, np.where(fold_of == (fold + 1) % folds, VAL, TRAIN)).astype(np.int8)
    split[torch.from_numpy(pool)] = torch.from_numpy(code)
    return replace(ds, split=split, fingerprint=f"{ds.fingerprint}-cv{folds}.{fold}.{group_by}.{seed}",
                   info={**ds.info, "cv": {"folds": folds, "fold": fold, "group_by": group_by, "partition": seed}})
