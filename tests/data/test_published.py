"""The published FER releases (RAF-DB, FER2013/FER+, AffectNet, ExpW, CK+), each built in its own layout
in tmp_path (tests/data/conftest.py): detection, class order, splits, drops, carved splits, bad rows."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.cli import main
from fer_core.data.carve import carve
from fer_core.data.dataset import TEST, TRAIN, VAL
from fer_core.data.inspect import detect_source, read_raw
from fer_core.data.sources import load_dataset
from fer_core.errors import DataError


def _counts(raw, split):
    return np.bincount(raw.labels[raw.split == split], minlength=len(raw.class_names)).tolist()


def _one_error(capsys, *argv: str) -> str:
    rc = main(list(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---- RAF-DB ----

def test_rafdb_basic_reads_the_published_order_from_1_and_carves_validation(published, tmp_path):
    root = published["rafdb"](tmp_path / "RAF-DB")
    assert detect_source(root) == "rafdb"
    raw = read_raw("rafdb", root, data_seed=0, val_fraction=0.15)
    assert raw.class_names == ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
    # label 1 (Surprise) had 12 training images, label 7 (Neutral) 6: 1-based codes land on the right names
    assert [a + b for a, b in zip(_counts(raw, TRAIN), _counts(raw, VAL))] == [12, 11, 10, 9, 8, 7, 6]
    assert _counts(raw, TEST) == [1] * 7  # the official test partition, untouched
    # stratified: every class that can spare an image gives ~15 %; Neutral (6 x 0.15 < 1) stays whole
    assert _counts(raw, VAL) == [2, 2, 2, 1, 1, 1, 0]
    assert raw.info["carves"] == ["val carved: 9 images (0.15 of each class); kept whole in training "
                                  "(too few to spare at 0.15): Neutral (6)"]
    again, other = read_raw("rafdb", root, data_seed=0), read_raw("rafdb", root, data_seed=1)
    assert (again.split == raw.split).all() and not (other.split == raw.split).all()  # seeded
    assert raw.paths[0].name == "train_00001_aligned.jpg" and not raw.has_aus


def test_rafdb_compound_is_told_apart_by_its_labels_and_reads_image_original(published, tmp_path):
    root = published["rafdb"](tmp_path / "compound", compound=True, original=True)
    assert detect_source(root) == "rafdb_compound"  # labels 8..11 exist only in the compound list
    raw = read_raw("rafdb_compound", root)
    assert raw.class_names[0] == "Happily Surprised" and raw.class_names[10] == "Disgustedly Surprised"
    assert len(raw.class_names) == 11 and _counts(raw, TEST) == [1] * 11
    assert raw.paths[0].parent.name == "original"
    # the same list named as basic is refused with the way out
    with pytest.raises(DataError, match=r"list_patition_label.txt:\d+: label '8' is not in 1..7 .*rafdb_compound"):
        read_raw("rafdb", root)


def test_rafdb_bad_row_is_one_line(published, tmp_path, capsys, cache_dir):
    root = published["rafdb"](tmp_path / "RAF-DB")
    f = root / "EmoLabel" / "list_patition_label.txt"
    lines = f.read_text().splitlines()
    lines[4] = "train_00005.jpg 0"  # labels count from 1
    f.write_text("\n".join(lines) + "\n")
    line = _one_error(capsys, "data", "inspect", str(root), "--cache-dir", cache_dir)
    assert line == f"error: {f}:5: label '0' is not in 1..7 (RAF-DB basic)"


# ---- FER2013 / FER+ ----

def test_fer2013_maps_usage_to_splits_and_decodes_the_pixel_column(published, tmp_path, cache_dir):
    root = published["fer2013"](tmp_path / "fer")
    assert detect_source(root) == "fer2013" and detect_source(root / "fer2013.csv") == "fer2013"
    ds = load_dataset("fer2013", str(root), img_size=48, cache_dir=cache_dir)
    assert ds.class_names == ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
    assert [ds.class_counts(s) for s in (TRAIN, VAL, TEST)] == [[4] * 7, [2] * 7, [2] * 7]
    # row 1's 2,304 values, unresized (48 px), grey in all three channels
    first = (root / "fer2013.csv").read_text().splitlines()[1].split(",")[1]
    assert ds.images[0, 0].flatten().tolist() == [int(v) for v in first.split()]
    assert (ds.images[0, 0] == ds.images[0, 2]).all()
    assert not ds.info["from_cache"] and load_dataset("fer2013", str(root), img_size=48,
                                                      cache_dir=cache_dir).info["from_cache"]


@pytest.mark.parametrize("bad, expected", [
    (lambda px: px.replace(" ", " 300 ", 1), "pixels has 2305 values, expected 2304"),
    (lambda px: px.rsplit(" ", 1)[0] + " 2x", "pixel value '2x' is not an integer in 0..255"),
])
def test_fer2013_bad_pixel_row_is_one_line_naming_the_line(published, tmp_path, capsys, cache_dir, bad, expected):
    root = published["fer2013"](tmp_path / "fer")
    f = root / "fer2013.csv"
    lines = f.read_text().splitlines()
    e, px, u = lines[7].split(",")
    lines[7] = f"{e},{bad(px)},{u}"
    f.write_text("\n".join(lines) + "\n")
    line = _one_error(capsys, "data", "inspect", str(root), "--cache-dir", cache_dir)
    assert line.startswith(f"error: {f}:8: ") and expected in line


def test_ferplus_majority_drops_nf_unknown_and_no_majority_and_soft_keeps_the_votes(published, tmp_path, cache_dir):
    root = published["fer2013"](tmp_path / "ferplus", plus=True)
    assert detect_source(root) == "ferplus"
    raw = read_raw("ferplus", root)
    assert raw.class_names == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    # rows 1-4 of the fixture: non-face, unknown majority, no majority, no image name (counted with NF)
    assert raw.info["dropped"] == {"NF (not a face)": 2, "unknown (most votes)": 1,
                                   "no majority (no emotion above half the votes)": 1}
    assert len(raw.labels) == 56 - 4 and raw.labels[0] == 4 % 8  # row 5 voted for emotion 4 % 8
    ds = load_dataset("ferplus", str(root), img_size=32, cache_dir=cache_dir, ferplus_labels="soft")
    assert ds.soft_labels is not None and ds.soft_labels.shape == (52, 8)
    # votes 7 and 2 (the single vote is an outlier, dropped as FERPlus's loader does)
    assert ds.soft_labels[0].tolist() == pytest.approx([0, 0, 0, 0, 7 / 9, 2 / 9, 0, 0])
    assert (ds.soft_labels.argmax(1) == ds.labels).all()
    majority = load_dataset("ferplus", str(root), img_size=32, cache_dir=cache_dir)
    assert majority.soft_labels is None and majority.fingerprint != ds.fingerprint


# ---- AffectNet ----

def test_affectnet_codes_drops_and_the_official_validation_as_test(published, tmp_path, cache_dir):
    root = published["affectnet"](tmp_path / "AffectNet")
    assert detect_source(root) == "affectnet"
    raw7 = read_raw("affectnet", root)
    assert raw7.class_names == ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger")
    assert raw7.info["dropped"] == {"None (code 8)": 2, "Uncertain (code 9)": 2, "Non-Face (code 10)": 2,
                                    "Contempt (code 7; affectnet_classes: 7)": 6}
    assert _counts(raw7, TEST) == [1] * 7  # validation.csv
    assert [a + b for a, b in zip(_counts(raw7, TRAIN), _counts(raw7, VAL))] == [14, 12, 10, 9, 8, 7, 6]
    assert _counts(raw7, VAL) == [2, 2, 2, 1, 1, 1, 0]  # carved from training, Anger (6) kept whole
    raw8 = read_raw("affectnet", root, affectnet_classes=8)
    assert raw8.class_names[7] == "Contempt" and _counts(raw8, TEST)[7] == 1
    assert "Contempt (code 7; affectnet_classes: 7)" not in raw8.info["dropped"]
    # the face box (x 5, y 6, 24 x 22) is cropped at decode: the decoded image is the box, resized
    ds = load_dataset("affectnet", str(root), img_size=24, cache_dir=cache_dir)
    from PIL import Image

    with Image.open(raw7.paths[0]) as im:
        box = np.asarray(im.convert("RGB").crop((5, 6, 29, 28)).resize((24, 24), Image.Resampling.LANCZOS))
    assert np.abs(ds.images[0].permute(1, 2, 0).numpy().astype(int) - box.astype(int)).max() <= 1


def test_affectnet_bad_row_is_one_line(published, tmp_path, capsys):
    root = published["affectnet"](tmp_path / "AffectNet", in_lists=False)
    f = root / "training.csv"
    lines = f.read_text().splitlines()
    lines[3] = lines[3].replace(",0,0.1,", ",11,0.1,")
    f.write_text("\n".join(lines) + "\n")
    line = _one_error(capsys, "validate", "smoke", "--profile", "smoke", "--data", str(root))
    assert line.endswith(f"{f}:4: expression '11' is not in 0..10 (AffectNet)")


# ---- ExpW ----

def test_expw_reads_every_face_with_its_box_and_carves_test_and_validation(published, tmp_path):
    root = published["expw"](tmp_path / "ExpW")
    assert detect_source(root) == "expw"
    raw = read_raw("expw", root, data_seed=3)
    assert raw.class_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert len(raw.labels) == 50 and raw.keys[-1] == "happy_actor_0.jpg#1"  # two faces of one photo
    assert raw.labels[-1] == 6 and raw.boxes[-1].tolist() == [2, 2, 20, 20]  # left, top, right, bottom
    assert raw.boxes[0].tolist() == [6, 4, 30, 28]
    test, val = _counts(raw, TEST), _counts(raw, VAL)
    assert sum(test) == 5 and all(test[:4]) and sum(val) == 6 and all(val[:4])  # ~15 % each, every class
    assert test[4:] == [0, 0, 0] and val[5:] == [0, 0]  # sad (6), surprise, neutral (5) too few to spare
    assert raw.info["carves"][0].startswith("test carved: 5 images (0.15 of each class); kept whole")


def test_expw_bad_row_is_one_line(published, tmp_path):
    root = published["expw"](tmp_path / "ExpW")
    f = root / "label" / "label.lst"
    f.write_text(f.read_text() + "angry_actor_0.jpg 2 4 6 30 28 0.5 9\n")
    with pytest.raises(DataError, match=r"label.lst:51: label '9' is not in 0..6 \(ExpW\)$"):
        read_raw("expw", root)


# ---- CK+ ----

def test_ckplus_carves_subject_disjoint_stratified_seeded_splits(published, tmp_path):
    root = published["ckplus"](tmp_path / "ck")
    assert detect_source(root) == "ckplus" and detect_source(root / "CK+48") == "ckplus"
    raw = read_raw("ckplus", root, data_seed=0)
    assert raw.class_names == ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
    subjects = np.asarray(raw.info["columns"]["subject"])
    sets = [set(subjects[raw.split == s]) for s in (TRAIN, VAL, TEST)]
    assert sets[0] and sets[1] and sets[2]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])  # no person on two sides
    assert all(n > 0 for n in _counts(raw, TEST)) and all(n > 0 for n in _counts(raw, VAL))  # stratified
    other = read_raw("ckplus", root, data_seed=5)
    assert (read_raw("ckplus", root, data_seed=0).split == raw.split).all() and (other.split != raw.split).any()


def test_ckplus_bad_file_name_is_one_line(published, tmp_path, capsys, cache_dir, image_writer):
    root = published["ckplus"](tmp_path / "ck")
    image_writer(root / "CK+48" / "fear" / "S999_1_x.png")
    line = _one_error(capsys, "data", "inspect", str(root), "--cache-dir", cache_dir)
    assert line.endswith("S999_1_x.png: file name 'S999_1_x.png' is not S###_###_########.png "
                         "(CK+ subject_sequence_frame)")


# ---- the carve itself, and data inspect ----

def test_carve_keeps_too_small_classes_whole_and_counts_them():
    labels = np.repeat(np.arange(3), [40, 10, 3])
    split = np.zeros(len(labels), dtype=np.int8)
    c = carve(split, labels, ("a", "b", "c"), TRAIN, VAL, 0.2, seed=0)
    assert np.bincount(labels[split == VAL], minlength=3).tolist() == [8, 2, 0]
    assert c.kept_whole == {"c": 3} and c.carved == 10


def test_data_inspect_names_format_counts_imbalance_and_drops(published, tmp_path, capsys, cache_dir):
    root = published["affectnet"](tmp_path / "AffectNet")
    assert main(["data", "inspect", str(root), "--cache-dir", cache_dir]) == 0
    out = capsys.readouterr().out
    assert "format: AffectNet (7 classes; official validation = test)" in out
    assert "splits: train 57, val 9, test 7" in out
    assert "imbalance ratio (largest / smallest training class): 2" in out  # 12 / 6 after the carve
    assert "dropped: None (code 8) 2, Uncertain (code 9) 2, Non-Face (code 10) 2, Contempt" in out
    assert "kept whole in training (too few to spare at 0.15): Anger (6)" in out


# ---- through validate and launch ----

@pytest.mark.parametrize("release", ["rafdb", "rafdb_compound", "fer2013", "ferplus", "affectnet", "expw", "ckplus"])
def test_validate_plans_the_ablation_on_each_release(release, published, tmp_path, capsys):
    """`--data` of every release gives a valid ablation plan (the AU rows left out: no release has AU labels)."""
    build = {"rafdb_compound": lambda p: published["rafdb"](p, compound=True),
             "ferplus": lambda p: published["fer2013"](p, plus=True)}.get(release) or published[release.split("_")[0]]
    root = build(tmp_path / release)
    assert main(["validate", "imbalance-ablation", "--profile", "smoke", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"data: {release} at {root.resolve()}" in out and "AU labels: no" in out
    assert "left out: au_multitask, au_attention" in out


def test_launch_trains_on_ferplus_vote_distributions(published, tmp_path, cache_dir, monkeypatch):
    """One launch end to end on a release (FER+: images from a CSV column, soft targets from the votes)."""
    import optuna
    from helpers import fer_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER_STUDY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FER_STUDY_CACHE", cache_dir)
    root = published["fer2013"](tmp_path / "ferplus", plus=True)
    url = f"sqlite:///{tmp_path / 's.db'}"
    out = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", url, "--data", str(root),
                  "--set", "ferplus_labels=soft", "--set", "epochs=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    study = optuna.load_study(study_name="smoke", storage=url)
    assert study.user_attrs["class_names"][:2] == ["neutral", "happiness"] and len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["config"]["ferplus_labels"] == "soft"
               for t in study.trials)
