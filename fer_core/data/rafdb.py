"""RAF-DB, basic (7 classes) and compound (11 classes) releases.

Layout (the same in both): ``EmoLabel/list_patition_label.txt`` with lines ``train_00001.jpg 5``
(the name's prefix is the official partition, train or test; labels numbered from 1), images at
``Image/aligned/train_00001_aligned.jpg`` or ``Image/original/train_00001.jpg``; ``Annotation/``
is not read. The release has no validation split: one is carved from train (``data/carve.py``).

Class orders as published (label 1 first):
- basic: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral;
- compound: Happily Surprised, Happily Disgusted, Sadly Fearful, Sadly Angry, Sadly Surprised,
  Sadly Disgusted, Fearfully Angry, Fearfully Surprised, Angrily Surprised, Angrily Disgusted,
  Disgustedly Surprised.

Basic and compound share the file name, so detection reads the labels: a label above 7 can only be
compound; a list whose labels all lie in 1..7 is read as basic (``dataset: rafdb_compound`` names
a compound list explicitly, e.g. a cut without classes 8-11).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.data.dataset import TEST, TRAIN
from fer_core.data.published import carve_missing, no_aus
from fer_core.data.rafce import read_key_value_file
from fer_core.data.raw import RawSource
from fer_core.errors import DataError

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # sic: the release spells it "patition"
BASIC = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
COMPOUND = ("Happily Surprised", "Happily Disgusted", "Sadly Fearful", "Sadly Angry", "Sadly Surprised",
            "Sadly Disgusted", "Fearfully Angry", "Fearfully Surprised", "Angrily Surprised", "Angrily Disgusted",
            "Disgustedly Surprised")
_PARTITIONS = {"train": TRAIN, "test": TEST}


def is_rafdb_dir(path: Path) -> bool:
    return path.is_dir() and (path / LABEL_FILE).is_file()


def rafdb_kind(path: Path) -> str:
    """``rafdb_compound`` when any label is above 7 (only compound has them), else ``rafdb``."""
    try:
        values = read_key_value_file(path / LABEL_FILE).values()
    except DataError:
        return "rafdb"  # the reader names the problem
    return "rafdb_compound" if any(v.strip().isdigit() and int(v) > len(BASIC) for v, _ in values) else "rafdb"


def _image(root: Path, key: str) -> Path:
    stem = Path(key).stem
    cands = [root / "Image" / "aligned" / f"{stem}_aligned.jpg", root / "Image" / "original" / key]
    for p in cands:
        if p.is_file():
            return p
    raise DataError(f"{cands[0]}: image for {key!r} not found (also looked for {cands[1]})")


def read_rafdb(root: str | Path, compound: bool, val_fraction: float = 0.15, seed: int = 0) -> RawSource:
    root = Path(root)
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise DataError(f"{root}: not a RAF-DB directory: {LABEL_FILE} missing")
    names = COMPOUND if compound else BASIC
    rows = read_key_value_file(label_file)
    if not rows:
        raise DataError(f"{label_file}: no labels")
    n = len(rows)
    labels = np.empty(n, dtype=np.int64)
    split = np.empty(n, dtype=np.int8)
    paths = []
    for i, (key, (value, line)) in enumerate(rows.items()):
        prefix = key.split("_", 1)[0]
        if prefix not in _PARTITIONS or "_" not in key:
            raise DataError(f"{label_file}:{line}: image name {key!r} must start with train_ or test_")
        code = int(value) if value.isdigit() else -1
        if not 1 <= code <= len(names):
            hint = "; a compound list? use dataset: rafdb_compound" if not compound and code > 0 else ""
            raise DataError(f"{label_file}:{line}: label {value!r} is not in 1..{len(names)} "
                            f"(RAF-DB {'compound' if compound else 'basic'}{hint})")
        labels[i] = code - 1  # published labels count from 1
        split[i] = _PARTITIONS[prefix]
        paths.append(_image(root, key))
    carves = carve_missing(split, labels, names, val_fraction=val_fraction, test_fraction=None, seed=seed)
    kind = "rafdb_compound" if compound else "rafdb"
    return RawSource(
        kind=kind, root=root, paths=paths, labels=labels, aus=no_aus(n), split=split, class_names=names,
        keys=tuple(rows), has_aus=False, label_files=[label_file],
        info={"source": kind, "format": f"RAF-DB {'compound (11 classes)' if compound else 'basic (7 classes)'}",
              "dropped": {}, "carves": carves},
        fingerprint_extra={"val_fraction": val_fraction, "seed": seed},
    )
