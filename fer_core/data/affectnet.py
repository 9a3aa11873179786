"""AffectNet (Mollahosseini et al. 2017), the manually annotated part.

Layout: ``training.csv`` and ``validation.csv`` (at the root or in ``Manually_Annotated_file_lists/``,
as the release ships them), columns ``subDirectory_filePath, face_x, face_y, face_width, face_height,
facial_landmarks, expression, valence, arousal``; images at ``Manually_Annotated_Images/<subDirectory_filePath>``.

Expression codes: 0 Neutral, 1 Happiness, 2 Sadness, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt,
8 None, 9 Uncertain, 10 Non-Face. ``affectnet_classes: 7`` (default, the common 7-class setting) keeps
0-6 and drops contempt; ``8`` keeps 0-7. Codes 8-10 are never a class: dropped and counted.
The face box is cropped when the image is decoded. The official validation set is the test split
(the test set was never released); validation is carved from training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.data.dataset import TEST, TRAIN
from fer_core.data.published import carve_missing, csv_rows, drop_summary, int_code, no_aus
from fer_core.data.raw import RawSource
from fer_core.errors import DataError

CLASSES = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
NOT_A_CLASS = {8: "None (code 8)", 9: "Uncertain (code 9)", 10: "Non-Face (code 10)"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")
LISTS = "Manually_Annotated_file_lists"
IMAGES = "Manually_Annotated_Images"


def affectnet_root(path: Path) -> Path:
    """The release root, also from one of its CSV files or the file-list folder."""
    if path.is_file():
        path = path.parent
    return path.parent if path.name == LISTS else path


def _csv(root: Path, name: str) -> Path | None:
    for p in (root / name, root / LISTS / name):
        if p.is_file():
            return p
    return None


def is_affectnet_dir(path: Path) -> bool:
    root = affectnet_root(path)
    return root.is_dir() and _csv(root, "training.csv") is not None and (root / IMAGES).is_dir()


def read_affectnet(path: str | Path, num_classes: int = 7, val_fraction: float = 0.15, seed: int = 0) -> RawSource:
    root = affectnet_root(Path(path))
    if num_classes not in (7, 8):
        raise DataError(f"affectnet_classes: {num_classes!r} must be 7 or 8")
    files = {TRAIN: _csv(root, "training.csv"), TEST: _csv(root, "validation.csv")}
    if files[TRAIN] is None or files[TEST] is None:
        raise DataError(f"{root}: not an AffectNet directory: training.csv and validation.csv needed "
                        f"(at the root or in {LISTS}/)")
    paths, labels, split, boxes, keys = [], [], [], [], []
    dropped = {why: 0 for why in NOT_A_CLASS.values()}
    if num_classes == 7:
        dropped["Contempt (code 7; affectnet_classes: 7)"] = 0
    for s, csv_path in files.items():
        for line, row in csv_rows(csv_path, COLUMNS, "AffectNet"):
            code = int_code(csv_path, line, "expression", row["expression"], "0..10")
            if not 0 <= code <= 10:
                raise DataError(f"{csv_path}:{line}: expression {row['expression']!r} is not in 0..10 (AffectNet)")
            if code in NOT_A_CLASS:
                dropped[NOT_A_CLASS[code]] += 1
                continue
            if code >= num_classes:
                dropped["Contempt (code 7; affectnet_classes: 7)"] += 1
                continue
            x, y, w, h = (int_code(csv_path, line, c, row[c], "pixels") for c in COLUMNS[1:5])
            if w <= 0 or h <= 0:
                raise DataError(f"{csv_path}:{line}: face box width {w}, height {h} must be positive")
            rel = (row["subDirectory_filePath"] or "").strip()
            img = root / IMAGES / rel
            if not rel or not img.is_file():
                raise DataError(f"{img}: image not found ({csv_path} line {line})")
            paths.append(img)
            labels.append(code)
            split.append(s)
            boxes.append((x, y, x + w, y + h))
            keys.append(rel)
    if not paths:
        raise DataError(f"{root}: no AffectNet image with an expression in 0..{num_classes - 1}")
    names = CLASSES[:num_classes]
    lab, spl = np.asarray(labels, dtype=np.int64), np.asarray(split, dtype=np.int8)
    carves = carve_missing(spl, lab, names, val_fraction=val_fraction, test_fraction=None, seed=seed)
    return RawSource(
        kind="affectnet", root=root, paths=paths, labels=lab, aus=no_aus(len(paths)), split=spl,
        class_names=names, keys=tuple(keys), has_aus=False, label_files=[files[TRAIN], files[TEST]],
        info={"source": "affectnet", "format": f"AffectNet ({num_classes} classes; official validation = test)",
              "dropped": drop_summary(dropped), "carves": carves},
        fingerprint_extra={"affectnet_classes": num_classes, "val_fraction": val_fraction, "seed": seed},
        boxes=np.asarray(boxes, dtype=np.int64),
    )
