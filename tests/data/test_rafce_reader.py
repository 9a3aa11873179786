from __future__ import annotations

import pytest

from fer_core.data.dataset import AU_INDEX, RAFCE_CLASSES
from fer_core.data.rafce import parse_au_label, read_rafce
from fer_core.data.sources import load_dataset
from fer_core.errors import DataError


@pytest.mark.parametrize(
    ("text", "aus", "counts"),
    [
        ("1+4+25", {1, 4, 25}, {"plain": 3}),
        ("null", set(), {"null": 1}),
        ("NULL", set(), {"null": 1}),
        ("L12+r4+B25+T1", {12, 4, 25, 1}, {"side_prefixed": 4}),
        ("26+26", {26}, {"plain": 2, "repeated": 1}),
        ("L12+l12+R12", {12}, {"side_prefixed": 3, "repeated": 1}),
        ("AD19+BL18+RB18+L12L", set(), {"malformed": 4}),
        ("t23", set(), {"side_prefixed": 1, "out_of_vocab": 1}),
        ("1+23+18+19", {1}, {"plain": 4, "out_of_vocab": 3}),
        ("1++4", {1, 4}, {"plain": 2, "malformed": 1}),
        ("", set(), {}),
        (" 12 + 25 ", {12, 25}, {"plain": 2}),
    ],
)
def test_parse_au_label(text, aus, counts):
    p = parse_au_label(text)
    assert p.aus == frozenset(aus)
    expected = {"plain": 0, "side_prefixed": 0, "null": 0, "malformed": 0, "repeated": 0, "out_of_vocab": 0}
    assert p.counts() == expected | counts


@pytest.mark.parametrize("layout", ["aligned", "plain", "root"])
def test_read_rafce(rafce_factory, tmp_path, layout):
    root = rafce_factory(tmp_path / "r", {"0001.jpg": "null", "0002.jpg": "L12+26+26+AD19+23"}, layout=layout)
    raw = read_rafce(root)
    assert raw.class_names == RAFCE_CLASSES
    assert raw.labels.tolist() == [*range(14), 3, 5]
    assert raw.split.tolist() == [0] * 14 + [1, 2]
    assert raw.aus[0].sum() == 0
    assert set(raw.aus[1].nonzero()[0]) == {AU_INDEX[12], AU_INDEX[26]}
    assert raw.info["au_token_kinds"] == {"plain": 3 * 14 + 3, "side_prefixed": 1, "null": 1, "malformed": 1,
                                          "repeated": 1, "out_of_vocab": 1}


def test_label_out_of_range(rafce_factory, tmp_path):
    root = rafce_factory(tmp_path / "r")
    text = (root / "RAFCE_emolabel.txt").read_text().replace("0003.jpg 2", "0003.jpg 14")
    (root / "RAFCE_emolabel.txt").write_text(text)
    with pytest.raises(DataError, match=r"RAFCE_emolabel\.txt:3: .*'14'.*0\.\.13"):
        read_rafce(root)


def test_partition_out_of_range(rafce_factory, tmp_path):
    root = rafce_factory(tmp_path / "r")
    text = (root / "RAFCE_partition.txt").read_text().replace("0016.jpg 1", "0016.jpg x")
    (root / "RAFCE_partition.txt").write_text(text)
    with pytest.raises(DataError, match=r"RAFCE_partition\.txt:15: "):
        read_rafce(root)


def test_key_mismatch(rafce_factory, tmp_path):
    root = rafce_factory(tmp_path / "r")
    with (root / "RAFCE_AUlabel.txt").open("a") as fh:
        fh.write("0099.jpg 1\n")
    with pytest.raises(DataError, match=r"'0099\.jpg' is in RAFCE_AUlabel\.txt but not in RAFCE_emolabel\.txt"):
        read_rafce(root)


def test_missing_image(rafce_factory, tmp_path):
    root = rafce_factory(tmp_path / "r")
    missing = root / "aligned" / "0005_aligned.jpg"
    missing.unlink()
    with pytest.raises(DataError, match=r"0005_aligned\.jpg: image for key '0005\.jpg' not found") as err:
        read_rafce(root)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_missing_label_file(rafce_factory, tmp_path):
    root = rafce_factory(tmp_path / "r")
    (root / "RAFCE_partition.txt").unlink()
    with pytest.raises(DataError, match=r"RAFCE_partition\.txt missing"):
        read_rafce(root)


def test_corrupt_image(rafce_factory, tmp_path):
    root = rafce_factory(tmp_path / "r")
    bad = root / "aligned" / "0007_aligned.jpg"
    bad.write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(DataError, match=r"0007_aligned\.jpg: cannot decode image") as err:
        load_dataset("rafce", str(root), img_size=16, cache_dir=tmp_path / "c")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg(rafce_factory, tmp_path):
    root = rafce_factory(tmp_path / "r")
    bad = root / "aligned" / "0008_aligned.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"0008_aligned\.jpg: cannot decode image") as err:
        load_dataset("rafce", str(root), img_size=16, cache_dir=tmp_path / "c")
    assert str(bad) in str(err.value)
