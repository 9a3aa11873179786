"""Manifest CSV reader: columns ``path,label,split`` and optionally ``aus``.

- ``path``: image file, relative to the CSV's directory (absolute paths work too), inside that directory:
  a manifest naming ``/etc/passwd`` or ``../../home/x.jpg`` is refused (a shared or downloaded manifest
  must not make a launch read any file the user can), unless ``$FER_STUDY_DATA_ANYWHERE=1``.
- ``label``: a class name or an integer class index (not mixed).
- ``aus``: RAF-CE style AU label (``1+4+25``, empty or ``null`` for none), parsed with
  ``parse_au_label``; without the column the data set has no AU targets.
- ``split``: ``train``/``val``/``test`` or ``0``/``1``/``2``.
- any other column (``subject``, ``video``...) is kept per image in ``info["columns"]``, e.g.
  for k-fold CV grouped by subject (``cv_group_by: subject``).

Class order: an explicit ``class_names`` list (argument, or ``classes.txt`` next to the CSV,
one name per line) wins. Otherwise names are put in RAF-CE order when they all are RAF-CE
classes, else sorted; integer labels use the RAF-CE names when they span exactly 0..13, else
their own numbers as names.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer_core.data.dataset import AU_VOCAB, RAFCE_CLASSES, SPLITS
from fer_core.data.rafce import TOKEN_KINDS, au_vector, parse_au_label
from fer_core.data.raw import RawSource
from fer_core.errors import DataError

REQUIRED = ("path", "label", "split")
ANYWHERE_ENV = "FER_STUDY_DATA_ANYWHERE"  # "1": a manifest may name images outside its own folder
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)} | {str(i): i for i in range(len(SPLITS))}


def _order_names(names: set[str]) -> tuple[str, ...]:
    if names <= set(RAFCE_CLASSES):
        return tuple(c for c in RAFCE_CLASSES if c in names)
    return tuple(sorted(names))


def read_manifest(csv_path: str | Path, class_names: Sequence[str] | None = None) -> RawSource:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest file not found")
    base = csv_path.parent
    label_files = [csv_path]
    sidecar = base / "classes.txt"
    if class_names is None and sidecar.is_file():
        try:
            class_names = [ln.strip() for ln in sidecar.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        except UnicodeDecodeError:
            raise DataError(f"{sidecar}: not a UTF-8 text file (one class name per line)") from None
        if not class_names or len(set(class_names)) != len(class_names):
            raise DataError(f"{sidecar}: expected one distinct class name per line")
        label_files.append(sidecar)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            for col in REQUIRED:
                if col not in columns:
                    raise DataError(f"{csv_path}: missing column {col!r} (need path,label,split; optional aus)")
            reader.fieldnames = columns
            rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None})
                    for row in reader]
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not a UTF-8 CSV file") from None
    except csv.Error as err:
        raise DataError(f"{csv_path}: bad CSV ({err})") from None
    if not rows:
        raise DataError(f"{csv_path}: no rows")
    has_aus = "aus" in columns

    raw_labels = [row["label"] for _, row in rows]
    # ASCII digits only: str.isdigit() also accepts '²' or '--1', which int() then refuses
    is_int = [re.fullmatch(r"-?[0-9]+", lab) is not None for lab in raw_labels]
    if any(is_int) and not all(is_int):
        line = rows[is_int.index(False) if is_int[0] else is_int.index(True)][0]
        raise DataError(f"{csv_path}:{line}: labels mix class names and integer indices; use one kind")
    if class_names is not None:
        names = tuple(class_names)
    elif all(is_int):
        ints = {int(v) for v in raw_labels}
        names = RAFCE_CLASSES if ints <= set(range(14)) and max(ints) == 13 else tuple(
            str(i) for i in range(max(max(ints), 0) + 1))
    else:
        names = _order_names(set(raw_labels))
    index = {n: i for i, n in enumerate(names)}

    n = len(rows)
    labels = np.empty(n, dtype=np.int64)
    split = np.empty(n, dtype=np.int8)
    aus = np.zeros((n, len(AU_VOCAB)), dtype=np.float32)
    kinds: Counter[str] = Counter({k: 0 for k in TOKEN_KINDS})
    paths: list[Path] = []
    inside, anywhere = base.resolve(), os.environ.get(ANYWHERE_ENV) == "1"
    keys: list[str] = []
    for i, (line, row) in enumerate(rows):
        lab = row["label"]
        if is_int[i]:
            v = int(lab)
            if not 0 <= v < len(names):
                raise DataError(f"{csv_path}:{line}: label {lab!r} is not an index in 0..{len(names) - 1}")
            labels[i] = v
        elif lab in index:
            labels[i] = index[lab]
        else:
            raise DataError(f"{csv_path}:{line}: unknown class {lab!r}; allowed: {', '.join(names)}")
        s = row["split"].lower()
        if s not in _SPLIT_IDS:
            raise DataError(f"{csv_path}:{line}: split {row['split']!r} must be train, val, test or 0, 1, 2")
        split[i] = _SPLIT_IDS[s]
        if has_aus:
            parsed = parse_au_label(row.get("aus", ""))
            kinds.update(parsed.counts())
            aus[i] = au_vector(parsed.aus)
        if not row["path"]:
            raise DataError(f"{csv_path}:{line}: empty path")
        p = Path(row["path"])
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise DataError(f"{p}: image not found (manifest {csv_path} line {line})")
        if not anywhere and not p.resolve().is_relative_to(inside):
            raise DataError(f"{csv_path}:{line}: image {row['path']!r} lies outside the manifest's folder {inside}; "
                            f"move it there, or set {ANYWHERE_ENV}=1 to allow images anywhere")
        paths.append(p)
        keys.append(row["path"])
    # extra columns (subject, video, ...) ride along: k-fold CV can group by them (cv_group_by)
    extra = [c for c in columns if c not in (*REQUIRED, "aus")]
    info = {"source": "manifest", "au_token_kinds": dict(kinds) if has_aus else {},
            "columns": {c: [row.get(c, "") for _, row in rows] for c in extra}}
    return RawSource(kind="manifest", root=csv_path, paths=paths, labels=labels, aus=aus, split=split,
                     class_names=names, keys=tuple(keys), has_aus=has_aus, label_files=label_files, info=info)
