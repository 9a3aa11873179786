"""CK+ as the widely shared 48 px class folders: ``CK+48/<class>/S###_###_########.png``.

The file name is subject, sequence and frame (``S010_004_00000019.png``); the subject is used to carve
test and validation splits that share no person with training (stratified, seeded; ``data/carve.py``),
since frames of one sequence are near-duplicates. Class order follows CK+'s emotion codes: neutral (0,
where present), anger, contempt, disgust, fear, happy, sadness, surprise; other folder names follow,
sorted. ``--data`` may point at ``CK+48`` itself or at the folder holding it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fer_core.data.dataset import TRAIN
from fer_core.data.folder import IMAGE_EXTS
from fer_core.data.published import carve_missing, no_aus
from fer_core.data.raw import RawSource
from fer_core.errors import DataError

ORDER = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
NAME = re.compile(r"^(S\d{3})_(\d{3})_(\d{8})\.png$")


def ckplus_root(path: Path) -> Path:
    return path / "CK+48" if (path / "CK+48").is_dir() else path


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_ckplus_dir(path: Path) -> bool:
    root = ckplus_root(path)
    if not root.is_dir():
        return False
    dirs = _class_dirs(root)
    if not dirs or not {d.name.lower() for d in dirs} & set(ORDER[1:]):
        return False
    first = next((f for d in dirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS), None)
    return first is not None and NAME.match(first.name) is not None


def read_ckplus(path: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> RawSource:
    root = ckplus_root(Path(path))
    if not root.is_dir():
        raise DataError(f"{root}: CK+ folder not found")
    dirs = _class_dirs(root)
    known = [d for o in ORDER for d in dirs if d.name.lower() == o]
    dirs = known + [d for d in dirs if d not in known]
    if not dirs:
        raise DataError(f"{root}: no class folders (expected CK+48/<class>/S###_###_########.png)")
    names = tuple(d.name for d in dirs)
    paths, labels, subjects = [], [], []
    for c, d in enumerate(dirs):
        for f in sorted(d.iterdir()):
            if not f.is_file() or f.name.startswith(".") or f.suffix.lower() not in IMAGE_EXTS:
                continue
            m = NAME.match(f.name)
            if m is None:
                raise DataError(f"{f}: file name {f.name!r} is not S###_###_########.png (CK+ subject_sequence_frame)")
            paths.append(f)
            labels.append(c)
            subjects.append(m.group(1))
    if not paths:
        raise DataError(f"{root}: no CK+ images")
    lab = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(subjects)
    split = np.full(len(lab), TRAIN, dtype=np.int8)
    carves = carve_missing(split, lab, names, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           groups=groups)
    return RawSource(
        kind="ckplus", root=root, paths=paths, labels=lab, aus=no_aus(len(lab)), split=split, class_names=names,
        keys=tuple(str(p.relative_to(root)) for p in paths), has_aus=False,
        info={"source": "ckplus", "format": "CK+ (48 px class folders)", "dropped": {}, "carves": carves,
              "subjects": len(np.unique(groups)),
              "columns": {"subject": subjects}},  # k-fold CV can group by it too (cv_group_by: subject)
        fingerprint_extra={"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed},
    )
