"""Image-folder reader: ``root/<class>/*.jpg`` or ``root/{train,val,test}/<class>/*.jpg``.

Without split folders every class is split into train/val/test by a stratified,
deterministic shuffle (``seed``, ``val_fraction``, ``test_fraction``); each class keeps at
least one training image. Folder data has no AU targets. Class order follows the RAF-CE
order when all folder names are RAF-CE classes, else sorted names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.data.dataset import AU_VOCAB, SPLITS, TRAIN
from fer_core.data.manifest import _order_names
from fer_core.data.raw import RawSource
from fer_core.errors import ConfigError, DataError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _images(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith("."))


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def stratified_split(labels: np.ndarray, num_classes: int, val_fraction: float, test_fraction: float,
                     seed: int) -> np.ndarray:
    """Split ids per sample: per class, shuffle with ``seed`` and cut val/test off the front."""
    if not (0.0 <= val_fraction < 1 and 0.0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: "
                          "each must be in [0, 1) and their sum below 1")
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), TRAIN, dtype=np.int8)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val, n_test = round(n * val_fraction), round(n * test_fraction)
        while n_val + n_test > max(n - 1, 0):  # keep at least one training image per class
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        split[idx[:n_val]] = 1
        split[idx[n_val:n_val + n_test]] = 2
    return split


def read_folder(root: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15,
                seed: int = 0) -> RawSource:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()}
    per_split: dict[int, dict[str, list[Path]]] = {}
    if split_dirs:
        if "train" not in split_dirs:
            raise DataError(f"{root}: has {', '.join(split_dirs)} folders but no train folder")
        for s, d in split_dirs.items():
            per_split[SPLITS.index(s)] = {c.name: _images(c) for c in _class_dirs(d)}
    else:
        per_split[TRAIN] = {c.name: _images(c) for c in _class_dirs(root)}
    names = _order_names({c for classes in per_split.values() for c in classes})
    if not names:
        raise DataError(f"{root}: no class folders (expected root/<class>/*.jpg or root/train/<class>/*.jpg)")
    index = {n: i for i, n in enumerate(names)}
    paths: list[Path] = []
    labels: list[int] = []
    splits: list[int] = []
    for s, classes in sorted(per_split.items()):
        for cname in names:
            for p in classes.get(cname, []):
                paths.append(p)
                labels.append(index[cname])
                splits.append(s)
    lab = np.asarray(labels, dtype=np.int64)
    if split_dirs:
        split = np.asarray(splits, dtype=np.int8)
        extra: dict = {"split": "folders"}
    else:
        split = stratified_split(lab, len(names), val_fraction, test_fraction, seed)
        extra = {"split": "stratified", "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}
    return RawSource(
        kind="folder", root=root, paths=paths, labels=lab,
        aus=np.zeros((len(paths), len(AU_VOCAB)), dtype=np.float32), split=split, class_names=names,
        keys=tuple(str(p.relative_to(root)) for p in paths), has_aus=False,
        info={"source": "folder", "au_token_kinds": {}}, fingerprint_extra=extra,
    )
