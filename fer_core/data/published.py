"""What the readers of the published FER releases share (RAF-DB, FER2013/FER+, AffectNet, ExpW, CK+).

Each reader returns a ``RawSource`` whose ``info`` says, for ``data inspect`` and the report:
``format`` (the release's name), ``dropped`` (reason -> images left out, e.g. AffectNet's non-faces)
and ``carves`` (one line per split carved out of another, ``fer_core/data/carve.py``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fer_core.data.carve import carve
from fer_core.data.dataset import AU_VOCAB, TEST, TRAIN, VAL
from fer_core.errors import DataError


def no_aus(n: int) -> np.ndarray:
    return np.zeros((n, len(AU_VOCAB)), dtype=np.float32)


def header(path: Path) -> list[str]:
    """A CSV file's column names (its first line), [] when it is not readable text; for detection."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return [c.strip() for c in fh.readline().split(",")]
    except (OSError, UnicodeDecodeError):
        return []


def csv_rows(path: Path, required: tuple[str, ...], what: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header; a missing column or a broken file is one line."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    with fh:
        try:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(f"{path}: missing column {missing[0]!r} ({what} has columns {', '.join(required)})")
            reader.fieldnames = columns
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a UTF-8 CSV file") from None
        except csv.Error as err:
            raise DataError(f"{path}: bad CSV ({err})") from None


def int_code(path: Path, line: int, column: str, value: str | None, allowed: str) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        raise DataError(f"{path}:{line}: {column} {value!r} is not an integer ({allowed})") from None


def carve_missing(split: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], *, val_fraction: float,
                  test_fraction: float | None, seed: int, groups: np.ndarray | None = None) -> list[str]:
    """Carve the test split (when ``test_fraction`` is given: the release has none) and then validation out
    of training; validation gets ``val_fraction`` of the whole, not of what the test carve left."""
    lines = []
    of_rest = val_fraction
    if test_fraction is not None:
        lines.append(carve(split, labels, class_names, TRAIN, TEST, test_fraction, seed, groups).line())
        of_rest = val_fraction / (1 - test_fraction)
    c = carve(split, labels, class_names, TRAIN, VAL, min(of_rest, 0.9), seed + 1, groups)
    c.fraction = val_fraction  # said as a share of the whole class, as the user set it
    lines.append(c.line())
    return lines


def drop_summary(dropped: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in dropped.items() if v}
