"""ExpW, the Expression in-the-Wild data set (Zhang et al. 2018).

Layout: ``label/label.lst``, one face per line: ``image_name face_id top left right bottom confidence
label`` (a photo with several faces has several lines), images in ``image/origin/`` (what the
release's ``origin.7z.*`` unpack to; ``image/`` and ``origin/`` are accepted too). Labels: 0 angry,
1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral. The face box is cropped at decode.
The release has no split: test and validation are carved, stratified and seeded (``data/carve.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.data.dataset import TRAIN
from fer_core.data.published import carve_missing, no_aus
from fer_core.data.raw import RawSource
from fer_core.errors import DataError

LABEL_FILE = Path("label") / "label.lst"
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
IMAGE_DIRS = (Path("image") / "origin", Path("image"), Path("origin"))


def is_expw_dir(path: Path) -> bool:
    return path.is_dir() and (path / LABEL_FILE).is_file()


def read_expw(root: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> RawSource:
    root = Path(root)
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise DataError(f"{root}: not an ExpW directory: {LABEL_FILE} missing")
    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        raise DataError(f"{root}: ExpW images not found (expected {IMAGE_DIRS[0]}/ with the unpacked origin.7z)")
    try:
        text = label_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{label_file}: cannot read as text ({err})") from None
    paths, labels, boxes, keys = [], [], [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 8:
            raise DataError(f"{label_file}:{line}: expected 8 fields (image face_id top left right bottom "
                            f"confidence label), got {raw.strip()!r}")
        name, face, *nums = parts
        try:
            top, left, right, bottom = (int(float(v)) for v in nums[:4])
            float(nums[4])
        except ValueError:
            raise DataError(f"{label_file}:{line}: box/confidence {' '.join(nums[:5])!r} are not numbers") from None
        code = int(nums[5]) if nums[5].isdigit() else -1
        if not 0 <= code < len(CLASSES):
            raise DataError(f"{label_file}:{line}: label {nums[5]!r} is not in 0..6 (ExpW)")
        if right <= left or bottom <= top:
            raise DataError(f"{label_file}:{line}: face box top {top} left {left} right {right} bottom {bottom} "
                            "is empty")
        img = image_dir / name
        if not img.is_file():
            raise DataError(f"{img}: image not found ({label_file} line {line})")
        paths.append(img)
        labels.append(code)
        boxes.append((left, top, right, bottom))
        keys.append(f"{name}#{face}")
    if not paths:
        raise DataError(f"{label_file}: no labels")
    lab = np.asarray(labels, dtype=np.int64)
    split = np.full(len(lab), TRAIN, dtype=np.int8)
    carves = carve_missing(split, lab, CLASSES, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return RawSource(
        kind="expw", root=root, paths=paths, labels=lab, aus=no_aus(len(lab)), split=split, class_names=CLASSES,
        keys=tuple(keys), has_aus=False, label_files=[label_file],
        info={"source": "expw", "format": "ExpW", "dropped": {}, "carves": carves},
        fingerprint_extra={"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed},
        boxes=np.asarray(boxes, dtype=np.int64),
    )
