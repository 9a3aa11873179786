"""Tiny hand-built data sources for the reader tests (as fixtures: tests/ is not a package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, seed: int = 0, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90) if path.suffix.lower() in (".jpg", ".jpeg") else \
        Image.fromarray(arr).save(path)
    return path


def make_rafce(root: Path, au_labels: dict[str, str] | None = None, layout: str = "aligned") -> Path:
    """14 train images (one per class) + one val + one test image, RAF-CE layout."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [(f"{i + 1:04d}.jpg", i, 0) for i in range(14)] + [("0016.jpg", 3, 1), ("0018.jpg", 5, 2)]
    au = {k: "1+4+25" for k, _, _ in rows}
    au.update(au_labels or {})
    (root / "RAFCE_emolabel.txt").write_text("".join(f"{k} {c}\n" for k, c, _ in rows))
    (root / "RAFCE_partition.txt").write_text("".join(f"{k} {s}\n" for k, _, s in rows))
    (root / "RAFCE_AUlabel.txt").write_text("".join(f"{k} {au[k]}\n" for k, _, _ in rows))
    for n, (k, _, _) in enumerate(rows):
        stem = k[:-4]
        path = {"aligned": root / "aligned" / f"{stem}_aligned.jpg", "plain": root / "aligned" / k,
                "root": root / k}[layout]
        write_image(path, seed=n)
    return root


@pytest.fixture
def rafce_factory():
    return make_rafce


@pytest.fixture
def image_writer():
    return write_image
