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


# ---- the published FER releases, each in its own layout (fer_core/data/<release>.py) ----

def _grey_row(rng: np.random.Generator) -> str:
    return " ".join(map(str, rng.integers(0, 256, 48 * 48)))


def make_rafdb(root: Path, compound: bool = False, per_class: tuple[int, ...] | None = None,
               original: bool = False) -> Path:
    """RAF-DB: EmoLabel/list_patition_label.txt (1-based labels), Image/aligned/<name>_aligned.jpg.
    ``per_class``: training images per class (test gets one per class)."""
    k = 11 if compound else 7
    per_class = per_class or tuple(12 - c for c in range(k))
    lines, n = [], 0
    width = 4 if compound else 5  # the releases number images train_0001 (compound), train_00001 (basic)
    for part, counts in (("train", per_class), ("test", (1,) * k)):
        for c, count in enumerate(counts):
            for _ in range(count):
                n += 1
                name = f"{part}_{n:0{width}d}.jpg"
                lines.append(f"{name} {c + 1}")
                path = (root / "Image" / "original" / name) if original else \
                    (root / "Image" / "aligned" / f"{name[:-4]}_aligned.jpg")
                write_image(path, seed=n, size=16)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    (root / "Annotation").mkdir(exist_ok=True)  # shipped with the release, not read
    return root


def make_fer2013(root: Path, plus: bool = False) -> Path:
    """fer2013.csv: 7 classes x (4 Training, 2 PublicTest, 2 PrivateTest) pixel rows; with ``plus`` a
    row-aligned fer2013new.csv whose first rows are a non-face, an unknown majority, a no-majority row
    and a row without an image name (FER+'s quirks), the rest clear majorities of one emotion."""
    rng = np.random.default_rng(0)
    rows = [(c, u) for u, n in (("Training", 4), ("PublicTest", 2), ("PrivateTest", 2)) for c in range(7)
            for _ in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(f"{c},{_grey_row(rng)},{u}\n"
                                                                          for c, u in rows))
    if plus:
        out = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"]
        for i, (_c, u) in enumerate(rows):
            votes = [0] * 10
            name = f"fer{i:07d}.png"
            if i == 0:
                votes[9] = 10  # not a face
            elif i == 1:
                votes[8], votes[0] = 6, 4  # unknown has the most votes
            elif i == 2:
                votes[0], votes[1], votes[2] = 4, 3, 3  # no emotion above half
            elif i == 3:
                name, votes[9] = "", 10  # FER+ leaves the name empty for images it excludes
            else:
                target = (i % 8)  # all 8 FER+ emotions, contempt included
                votes[target], votes[(target + 1) % 8], votes[(target + 2) % 8] = 7, 2, 1  # the 1 is an outlier
            out.append(f"{u},{name}," + ",".join(map(str, votes)))
        (root / "fer2013new.csv").write_text("\n".join(out) + "\n")
    return root


def make_affectnet(root: Path, in_lists: bool = True) -> Path:
    """AffectNet: training.csv / validation.csv (real columns, landmarks quoted with ';'), images of
    40x30 px with the face box inside, codes 0-7 plus a None, an Uncertain and a Non-Face row."""
    lists = root / "Manually_Annotated_file_lists" if in_lists else root
    lists.mkdir(parents=True, exist_ok=True)
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    n = 0
    for name, per_class in (("training.csv", (14, 12, 10, 9, 8, 7, 6, 5)), ("validation.csv", (1,) * 8)):
        rows = [head]
        codes = [c for c, k in enumerate(per_class) for _ in range(k)] + [8, 9, 10]
        for code in codes:
            n += 1
            rel = f"{n % 3 + 1}/{n:04x}abc.jpg"
            write_image(root / "Manually_Annotated_Images" / rel, seed=n, size=40)
            rows.append(f'{rel},5,6,24,22,"1.0;2.0;3.0;4.0",{code},0.1,-0.2')
        (lists / name).write_text("\n".join(rows) + "\n")
    return root


def make_expw(root: Path) -> Path:
    """ExpW: label/label.lst (name face_id top left right bottom confidence label), image/origin/;
    one photo holds two faces (two lines)."""
    lines = []
    for c in range(7):
        for i in range(10 - c):
            name = f"{['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral'][c]}_actor_{i}.jpg"
            write_image(root / "image" / "origin" / name, seed=c * 20 + i, size=40)
            lines.append(f"{name} 0 4 6 30 28 {20 + i}.5 {c}")
    lines.append("happy_actor_0.jpg 1 2 2 20 20 11.25 6")  # a second face in one photo
    (root / "label").mkdir(parents=True, exist_ok=True)
    (root / "label" / "label.lst").write_text("\n".join(lines) + "\n")
    return root


CKPLUS_CLASSES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")


def make_ckplus(root: Path, subjects: int = 12) -> Path:
    """CK+48/<class>/S###_###_########.png: each subject shows 2-3 of the classes, 3 frames per
    sequence (the last frames of a sequence, as CK+48 ships them)."""
    for s in range(subjects):
        for j, c in enumerate(CKPLUS_CLASSES):
            if (s + j) % 3 == 0 or (c == "contempt" and s > 3):
                continue
            for f in range(3):
                write_image(root / "CK+48" / c / f"S{s + 10:03d}_{j + 1:03d}_{f + 10:08d}.png", seed=s * 50 + j * 3 + f,
                            size=48)
    return root


@pytest.fixture
def published():
    """Builders of the published releases' layouts, by name."""
    return {"rafdb": make_rafdb, "fer2013": make_fer2013, "affectnet": make_affectnet, "expw": make_expw,
            "ckplus": make_ckplus}
