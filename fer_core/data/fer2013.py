"""FER2013 (``fer2013.csv``) and FER+ (``fer2013new.csv`` beside it).

FER2013: columns ``emotion,pixels,Usage``; ``pixels`` is a 48x48 grey image as 2,304 space-separated
values 0..255; emotion 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral; Usage
Training / PublicTest / PrivateTest are train / val / test (the split the FER2013 literature reports).

FER+ (Barsoum et al. 2016, microsoft/FERPlus): ``fer2013new.csv`` has one row per row of
``fer2013.csv``, same order: ``Usage, Image name``, then ten annotators' vote counts ``neutral,
happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF``. As in FERPlus's own
loader, single votes are dropped as outliers first; then an image is

- dropped as ``NF`` (not a face) or ``unknown`` when that column has the most votes (or the row has
  no image name: FER+ leaves it empty for the images it excludes),
- dropped as ``no majority`` when no emotion has more than half of the remaining votes,
- else labelled with the majority emotion (8 classes, the vote columns' order).

``ferplus_labels: soft`` trains on the images' vote distributions over the 8 emotions (the losses
take probability targets) on the same images; metrics still use the majority label.

Pixels are parsed only on a cache miss, in one vectorised pass (``np.fromstring`` over all rows).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fer_core.data.dataset import TEST, TRAIN, VAL
from fer_core.data.published import csv_rows, drop_summary, header, int_code, no_aus
from fer_core.data.raw import RawSource
from fer_core.errors import DataError

FER2013_FILE = "fer2013.csv"
FERPLUS_FILE = "fer2013new.csv"
FER2013_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                 "unknown", "NF")
FERPLUS_CLASSES = FERPLUS_VOTES[:8]
USAGE = {"Training": TRAIN, "PublicTest": VAL, "PrivateTest": TEST}
SIDE, NPIX = 48, 48 * 48


def fer2013_csv(path: Path) -> Path:
    return path if path.is_file() else path / FER2013_FILE


def has_fer2013(path: Path) -> bool:
    p = fer2013_csv(path)
    return p.is_file() and {"emotion", "pixels"} <= set(header(p))


def _rows(csv_path: Path) -> list[tuple[int, str, str, str]]:
    """(line, emotion, pixels, Usage) per row. Split by hand, not with the csv module: no field of this file
    is quoted or holds a comma, and csv's per-character parsing of 300 MB took 9.5 s of a 12 s read."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"{csv_path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not a UTF-8 CSV file") from None
    lines = text.splitlines()
    cols = [c.strip() for c in lines[0].split(",")] if lines else []
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in cols]
    if missing:
        raise DataError(f"{csv_path}: missing column {missing[0]!r} (FER2013 has columns emotion, pixels, Usage)")
    ie, ip, iu = cols.index("emotion"), cols.index("pixels"), cols.index("Usage")
    out = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        f = line.split(",")
        if len(f) != len(cols):
            raise DataError(f"{csv_path}:{n}: {len(f)} fields, expected {len(cols)} ({', '.join(cols)})")
        out.append((n, f[ie].strip(), f[ip].strip(), f[iu].strip()))
    return out


def _read_fer2013(csv_path: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    labels, split, lines = [], [], []
    for line, emotion, pixels, usage in _rows(csv_path):
        code = int_code(csv_path, line, "emotion", emotion, "0..6")
        if not 0 <= code <= 6:
            raise DataError(f"{csv_path}:{line}: emotion {emotion!r} is not in 0..6 (FER2013)")
        if usage not in USAGE:
            raise DataError(f"{csv_path}:{line}: Usage {usage!r} must be Training, PublicTest or PrivateTest")
        # a cheap count here (C speed) so a short or long row is named at read time; values at decode
        if pixels.count(" ") != NPIX - 1:
            raise DataError(f"{csv_path}:{line}: pixels has {len(pixels.split())} values, expected {NPIX} "
                            f"(48x48, space-separated)")
        labels.append(code)
        split.append(USAGE[usage])
        lines.append(line)
    if not labels:
        raise DataError(f"{csv_path}: no rows")
    return np.asarray(labels, dtype=np.int64), np.asarray(split, dtype=np.int8), lines


def decode_pixels(csv_path: Path, keep: np.ndarray) -> np.ndarray:
    """All rows' pixel strings -> uint8 (N, 48, 48) in one vectorised parse; a bad value is named by line."""
    rows = [(line, pixels) for line, _, pixels, _ in _rows(csv_path)]
    rows = [rows[i] for i in np.flatnonzero(keep)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            flat = np.fromstring(" ".join(p for _, p in rows), dtype=np.int32, sep=" ")
    except (ValueError, DeprecationWarning):
        flat = None
    if flat is None or flat.size != len(rows) * NPIX or flat.min() < 0 or flat.max() > 255:
        for line, p in rows:  # the slow path, on bad data only: which row, which value
            for tok in p.split():
                if not (tok.isdigit() and int(tok) <= 255):
                    raise DataError(f"{csv_path}:{line}: pixel value {tok!r} is not an integer in 0..255")
        raise DataError(f"{csv_path}: pixel column does not parse as {len(rows)} rows of {NPIX} values")
    return flat.astype(np.uint8).reshape(len(rows), SIDE, SIDE)


def _ferplus_votes(new_path: Path, fer_split: np.ndarray, fer_lines: list[int]) -> tuple[np.ndarray, list[int]]:
    votes, lines = [], []
    inv = {v: k for k, v in USAGE.items()}
    for i, (line, row) in enumerate(csv_rows(new_path, ("Usage", "Image name", *FERPLUS_VOTES), "FER+")):
        if i >= len(fer_split):
            raise DataError(f"{new_path}:{line}: more rows than {FER2013_FILE} ({len(fer_split)})")
        usage = (row["Usage"] or "").strip()
        if usage != inv[int(fer_split[i])]:
            raise DataError(f"{new_path}:{line}: Usage {usage!r} but {FER2013_FILE} line {fer_lines[i]} says "
                            f"{inv[int(fer_split[i])]!r} (the files must be row-aligned)")
        v = [int_code(new_path, line, c, row[c], "a vote count 0..10") for c in FERPLUS_VOTES]
        if min(v) < 0:
            raise DataError(f"{new_path}:{line}: negative vote count")
        if not (row["Image name"] or "").strip():
            v = [0] * 9 + [max(1, sum(v))]  # no image name: FER+ excludes the image (counted with NF)
        votes.append(v)
        lines.append(line)
    if len(votes) != len(fer_split):
        raise DataError(f"{new_path}: {len(votes)} rows but {FER2013_FILE} has {len(fer_split)} (row-aligned)")
    return np.asarray(votes, dtype=np.float64), lines


def ferplus_targets(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Majority label per row (-1: dropped), soft targets over the 8 emotions, drop counts (vectorised)."""
    v = np.where(votes > 1, votes, 0.0)  # single votes are outliers (FERPlus's loader)
    total = v.sum(1)
    top = v.argmax(1)
    labels = np.where((top < 8) & (v.max(1) > 0.5 * total), top, -1)
    dropped = {
        "NF (not a face)": int(((top == 9) & (total > 0)).sum()),
        "unknown (most votes)": int(((top == 8) & (total > 0)).sum()),
        "no majority (no emotion above half the votes)": int(((top < 8) & (labels < 0)).sum())  # all-zero rows too,
    }
    emo = v[:, :8]
    soft = emo / np.maximum(emo.sum(1, keepdims=True), 1e-9)
    return labels, soft.astype(np.float32), dropped


def read_fer2013(path: str | Path, plus: bool, soft: bool = False) -> RawSource:
    path = Path(path)
    csv_path = fer2013_csv(path)
    if not csv_path.is_file():
        raise DataError(f"{path}: {FER2013_FILE} not found")
    labels, split, lines = _read_fer2013(csv_path)
    label_files = [csv_path]
    dropped: dict[str, int] = {}
    keep = np.ones(len(labels), dtype=bool)
    soft_labels = None
    if plus:
        new_path = csv_path.parent / FERPLUS_FILE
        if not new_path.is_file():
            raise DataError(f"{csv_path.parent}: {FERPLUS_FILE} not found beside {FER2013_FILE} (FER+ labels)")
        votes, _ = _ferplus_votes(new_path, split, lines)
        labels, soft_all, dropped = ferplus_targets(votes)
        keep = labels >= 0
        labels, split = labels[keep].astype(np.int64), split[keep]
        soft_labels = soft_all[keep] if soft else None
        label_files.append(new_path)
    names = FERPLUS_CLASSES if plus else FER2013_CLASSES
    kind = "ferplus" if plus else "fer2013"
    n = len(labels)
    return RawSource(
        kind=kind, root=csv_path, paths=[], labels=labels, aus=no_aus(n), split=split, class_names=names,
        keys=tuple(f"row{lines[i]}" for i in np.flatnonzero(keep)), has_aus=False, label_files=label_files,
        info={"source": kind, "format": "FER+ (fer2013new.csv votes on fer2013.csv)" if plus else "FER2013",
              "dropped": drop_summary(dropped), "carves": [],
              **({"ferplus_labels": "soft" if soft else "majority"} if plus else {})},
        fingerprint_extra={"ferplus_labels": "soft" if soft else "majority"} if plus else {},
        pixels=lambda: decode_pixels(csv_path, keep), soft_labels=soft_labels,
    )
