"""Reader for the official RAF-CE release (and the synthetic stand-in, which uses its format).

Layout: ``RAFCE_emolabel.txt`` (``0001.jpg 5``), ``RAFCE_partition.txt`` (``0001.jpg 0``,
0 train / 1 val / 2 test), ``RAFCE_AUlabel.txt`` (``0001.jpg 1+4+25``, ``null`` = no AU) and
images at ``aligned/0001_aligned.jpg`` (``aligned/0001.jpg`` or ``<root>/0001.jpg`` also work).

AU label tokens are classified deliberately, because the real file is messy:

- ``plain``: a bare number, ``12``.
- ``side_prefixed``: one side letter L/R/B/T (any case) then a number: ``L12``, ``r4``, ``t23``.
  ``t23`` is read as a lower-case ``T`` prefix on AU23, not as a typo. The AU counts as present.
- ``null``: the word ``null`` (any case); the image has no AU.
- ``malformed``: anything else (``AD19``, ``BL18``, ``RB18``, ``L12L``, empty tokens from ``1++4``);
  dropped, because guessing would invent labels.

Two more counts overlap with the kinds above: ``repeated`` (the same normalised token again in
one label, ``26+26``; kept once) and ``out_of_vocab`` (a parsable AU number outside the 18-AU
vocabulary, e.g. 18, 19, 23; dropped from the targets but counted so ``data inspect`` shows it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_core.data.dataset import AU_INDEX, AU_VOCAB, RAFCE_CLASSES
from fer_core.data.raw import RawSource
from fer_core.errors import DataError

EMO_FILE = "RAFCE_emolabel.txt"
PARTITION_FILE = "RAFCE_partition.txt"
AU_FILE = "RAFCE_AUlabel.txt"
TOKEN_KINDS = ("plain", "side_prefixed", "null", "malformed", "repeated", "out_of_vocab")

_TOKEN = re.compile(r"^([LRBT]?)(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class AuParse:
    aus: frozenset[int]  # AU numbers present, restricted to AU_VOCAB
    plain: int = 0
    side_prefixed: int = 0
    null: int = 0
    malformed: int = 0
    repeated: int = 0
    out_of_vocab: int = 0

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in TOKEN_KINDS}


def parse_au_label(text: str) -> AuParse:
    """Parse one AU label (``1+4+25``, ``L12+26+26``, ``null``); see the module doc for the rules."""
    text = text.strip()
    if not text:
        return AuParse(frozenset())
    counts: Counter[str] = Counter()
    aus: set[int] = set()
    seen: set[str] = set()
    for raw_tok in text.split("+"):
        tok = raw_tok.strip()
        if tok.lower() == "null":
            counts["null"] += 1
            continue
        m = _TOKEN.match(tok)
        if m is None:
            counts["malformed"] += 1
            continue
        side, number = m.group(1).upper(), int(m.group(2))
        counts["side_prefixed" if side else "plain"] += 1
        norm = f"{side}{number}"
        if norm in seen:
            counts["repeated"] += 1
        seen.add(norm)
        if number in AU_INDEX:
            aus.add(number)
        else:
            counts["out_of_vocab"] += 1
    return AuParse(frozenset(aus), **{k: counts[k] for k in TOKEN_KINDS})


def au_vector(aus: frozenset[int] | set[int]) -> np.ndarray:
    v = np.zeros(len(AU_VOCAB), dtype=np.float32)
    for au in aus:
        v[AU_INDEX[au]] = 1.0
    return v


def read_key_value_file(path: Path) -> dict[str, tuple[str, int]]:
    """``key value`` lines -> {key: (value, line number)}; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    out: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected 'key value', got {line.strip()!r}")
        key, value = parts[0], parts[1].strip()
        if key in out:
            raise DataError(f"{path}:{lineno}: key {key!r} repeated (first on line {out[key][1]})")
        out[key] = (value, lineno)
    return out


def _int_in_range(path: Path, lineno: int, value: str, what: str, hi: int) -> int:
    try:
        v = int(value)
    except ValueError:
        v = -1
    if not 0 <= v <= hi:
        raise DataError(f"{path}:{lineno}: {what} {value!r} is not an integer in 0..{hi}")
    return v


def image_candidates(root: Path, key: str) -> list[Path]:
    stem = Path(key).stem
    return [root / "aligned" / f"{stem}_aligned.jpg", root / "aligned" / key, root / key]


def find_image(root: Path, key: str) -> Path:
    cands = image_candidates(root, key)
    for p in cands:
        if p.is_file():
            return p
    also = ", ".join(str(p) for p in cands[1:])
    raise DataError(f"{cands[0]}: image for key {key!r} not found (also looked for {also})")


def is_rafce_dir(path: Path) -> bool:
    return path.is_dir() and (path / EMO_FILE).is_file() and (path / PARTITION_FILE).is_file()


def read_rafce(root: str | Path) -> RawSource:
    """Parse the label files, resolve image paths; images are decoded later by the cache."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: RAF-CE directory not found")
    for name in (EMO_FILE, PARTITION_FILE):
        if not (root / name).is_file():
            raise DataError(f"{root}: not a RAF-CE directory: {name} missing "
                            f"(expected {EMO_FILE}, {PARTITION_FILE} and {AU_FILE})")
    emo = read_key_value_file(root / EMO_FILE)
    part = read_key_value_file(root / PARTITION_FILE)
    has_aus = (root / AU_FILE).is_file()  # optional: without it the AU head is simply off
    au = read_key_value_file(root / AU_FILE) if has_aus else None

    files = {EMO_FILE: emo, PARTITION_FILE: part} | ({AU_FILE: au} if au is not None else {})
    for name_a, a in files.items():
        for name_b, b in files.items():
            missing = [k for k in a if k not in b]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise DataError(f"{root}: key {missing[0]!r} is in {name_a} but not in {name_b}{more}")
    if not emo:
        raise DataError(f"{root / EMO_FILE}: no labels")

    n = len(emo)
    labels = np.empty(n, dtype=np.int64)
    split = np.empty(n, dtype=np.int8)
    aus = np.zeros((n, len(AU_VOCAB)), dtype=np.float32)
    kinds: Counter[str] = Counter({k: 0 for k in TOKEN_KINDS})
    paths: list[Path] = []
    keys = tuple(emo)
    for i, key in enumerate(keys):
        value, lineno = emo[key]
        labels[i] = _int_in_range(root / EMO_FILE, lineno, value, "emotion label", len(RAFCE_CLASSES) - 1)
        value, lineno = part[key]
        split[i] = _int_in_range(root / PARTITION_FILE, lineno, value, "partition", 2)
        if au is not None:
            parsed = parse_au_label(au[key][0])
            kinds.update(parsed.counts())
            aus[i] = au_vector(parsed.aus)
        paths.append(find_image(root, key))
    info = {"source": "rafce", "au_token_kinds": dict(kinds) if has_aus else {}}
    return RawSource(
        kind="rafce", root=root, paths=paths, labels=labels, aus=aus, split=split,
        class_names=RAFCE_CLASSES, keys=keys, has_aus=has_aus,
        label_files=[root / name for name in files], info=info,
    )
