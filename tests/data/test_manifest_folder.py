from __future__ import annotations

import numpy as np
import pytest

from fer_core.data.dataset import AU_INDEX, RAFCE_CLASSES
from fer_core.data.folder import read_folder
from fer_core.data.manifest import read_manifest
from fer_core.data.sources import load_dataset
from fer_core.errors import ConfigError, DataError


def _manifest(tmp_path, image_writer, rows, header="path,label,aus,split"):
    for i, row in enumerate(rows):
        image_writer(tmp_path / row.split(",")[0], seed=i)
    csv = tmp_path / "m.csv"
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    return csv


def test_manifest_rafce_names_keep_rafce_order(tmp_path, image_writer):
    csv = _manifest(tmp_path, image_writer, [
        "img/a.jpg,Sadly angry,1+4,train", "img/b.jpg,Happily surprised,L12+25,train",
        "img/c.jpg,Happily surprised,,val", "img/d.jpg,Sadly angry,null,2",
    ])
    raw = read_manifest(csv)
    assert raw.class_names == ("Happily surprised", "Sadly angry")  # RAF-CE order, not sorted
    assert raw.labels.tolist() == [1, 0, 0, 1]
    assert raw.split.tolist() == [0, 0, 1, 2]
    assert raw.has_aus and raw.aus[1, AU_INDEX[12]] == 1 and raw.aus[2].sum() == 0
    assert raw.info["au_token_kinds"]["side_prefixed"] == 1
    assert raw.info["au_token_kinds"]["null"] == 1


def test_manifest_other_names_sorted_and_loads(tmp_path, image_writer):
    csv = _manifest(tmp_path, image_writer, ["x.png,zeta,,train", "y.png,alpha,,train", "z.png,zeta,,test"],
                    header="path,label,aus,split")
    ds = load_dataset("manifest", str(csv), img_size=16, cache_dir=tmp_path / "c")
    assert ds.class_names == ("alpha", "zeta")
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.images.shape == (3, 3, 16, 16)


def test_manifest_int_labels(tmp_path, image_writer):
    rows = [f"i{c}.jpg,{c},,train" for c in range(14)]
    assert read_manifest(_manifest(tmp_path, image_writer, rows)).class_names == RAFCE_CLASSES
    rows = [f"j{c}.jpg,{c},,train" for c in range(3)]
    raw = read_manifest(_manifest(tmp_path, image_writer, rows, header="path,label,aus,split"))
    assert raw.class_names == ("0", "1", "2")


def test_manifest_without_aus_column(tmp_path, image_writer):
    raw = read_manifest(_manifest(tmp_path, image_writer, ["a.jpg,x,train"], header="path,label,split"))
    assert not raw.has_aus and raw.aus.sum() == 0


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (["a.jpg,x,,train", "b.jpg,y,,val"], "class 'y' has no training images"),
        (["a.jpg,x,,train", "b.jpg,1,,train"], r"m\.csv:3: labels mix class names and integer"),
        (["a.jpg,x,,training"], r"m\.csv:2: split 'training' must be train, val, test"),
    ],
)
def test_manifest_errors(tmp_path, image_writer, rows, match):
    csv = _manifest(tmp_path, image_writer, rows)
    with pytest.raises(DataError, match=match):
        load_dataset("manifest", str(csv), img_size=16, cache_dir=tmp_path / "c")


def test_manifest_missing_column_and_image(tmp_path, image_writer):
    csv = _manifest(tmp_path, image_writer, ["a.jpg,x,train"], header="path,label,fold")
    with pytest.raises(DataError, match="missing column 'split'"):
        read_manifest(csv)
    csv.write_text("path,label,split\nnope.jpg,x,train\n")
    with pytest.raises(DataError, match=r"nope\.jpg: image not found"):
        read_manifest(csv)


def test_manifest_class_list_sidecar(tmp_path, image_writer):
    csv = _manifest(tmp_path, image_writer, ["a.jpg,b,,train", "b.jpg,a,,train"])
    (tmp_path / "classes.txt").write_text("b\na\n")
    assert read_manifest(csv).class_names == ("b", "a")
    csv.write_text("path,label,aus,split\na.jpg,c,,train\n")
    with pytest.raises(DataError, match="unknown class 'c'; allowed: b, a"):
        read_manifest(csv)


def _folder(root, image_writer, counts):
    for cname, n in counts.items():
        for i in range(n):
            image_writer(root / cname / f"{i:03d}.png", seed=i)
    return root


def test_folder_stratified_split(tmp_path, image_writer):
    root = _folder(tmp_path / "f", image_writer, {"happy": 20, "sad": 7, "rare": 1})
    (root / "happy" / "notes.txt").write_text("ignored")
    raw = read_folder(root, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert raw.class_names == ("happy", "rare", "sad") and not raw.has_aus
    for c, n in enumerate((20, 1, 7)):
        counts = np.bincount(raw.split[raw.labels == c], minlength=3)
        assert counts.sum() == n and counts[0] >= 1
    assert np.bincount(raw.split[raw.labels == 0]).tolist() == [12, 4, 4]
    again = read_folder(root, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert (again.split == raw.split).all()
    other = read_folder(root, val_fraction=0.2, test_fraction=0.2, seed=4)
    assert (other.split != raw.split).any()


def test_folder_split_dirs_and_empty_class(tmp_path, image_writer):
    root = tmp_path / "g"
    _folder(root / "train", image_writer, {"a": 2, "b": 2})
    _folder(root / "val", image_writer, {"a": 1, "c": 1})
    (root / "train" / "c").mkdir()
    with pytest.raises(DataError, match="class 'c' has no training images"):
        load_dataset("folder", str(root), img_size=16, cache_dir=tmp_path / "c")
    _folder(root / "train", image_writer, {"c": 1})
    ds = load_dataset("folder", str(root), img_size=16, cache_dir=tmp_path / "c")
    assert ds.class_names == ("a", "b", "c")
    assert ds.class_counts(0) == [2, 2, 1] and ds.class_counts(1) == [1, 0, 1] and not ds.has_aus


def test_folder_bad_fractions(tmp_path, image_writer):
    root = _folder(tmp_path / "f", image_writer, {"a": 3})
    with pytest.raises(ConfigError, match="val_fraction"):
        read_folder(root, val_fraction=0.6, test_fraction=0.5)
