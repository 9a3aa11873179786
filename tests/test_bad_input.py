"""Bad input, systematically (hypothesis): study files, search spaces, ``--set`` overrides, AU label
strings and manifest CSVs either load or fail with one ``FerError`` line naming what is wrong; never
another exception from deep inside, never a traceback, never a write to storage."""

from __future__ import annotations

import copy
import csv
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fer_core.cli import main
from fer_core.config import build_config, parse_override
from fer_core.data.manifest import read_manifest
from fer_core.data.rafce import parse_au_label
from fer_core.errors import FerError
from fer_core.study.space import parse_space
from fer_core.study.spec import load_study
from fer_core.study.studyfile import read_yaml

FEW = settings(max_examples=int(__import__("os").environ.get("HYP_N", 40)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# any value YAML can carry: scalars of every type (NaN and infinities too) and small nests of them
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["ce", "focal", "grid", "search", "tpe", "", "-1", "1e-3"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def one_line_or_ok(fn, *args, **kw):
    """Run ``fn``: it returns, or raises a FerError whose message is one non-empty line."""
    try:
        return fn(*args, **kw)
    except FerError as err:
        msg = str(err)
        assert msg.strip() and "\n" not in msg, repr(msg)
        return None


SMOKE = read_yaml(Path(__file__).resolve().parents[1] / "studies" / "smoke.yaml")
PATHS = [("name",), ("question",), ("extends",), ("seeds",), ("design",), ("design", "kind"), ("design", "variants"),
         ("design", "variants", "balanced_softmax"), ("design", "variants", "balanced_softmax", "loss"),
         ("design", "baseline"), ("budget",), ("budget", "max_concurrent"), ("budget", "time_s"), ("budget", "trials"),
         ("profiles",), ("profiles", "smoke", "base", "epochs"), ("profiles", "smoke", "base"), ("resources",),
         ("resources", "cpu"), ("objective",), ("objective", "metric"), ("optuna_sampler",), ("pruner",),
         ("scheduler", "name"), ("max_failures",), ("checkpoint_every",), ("checkpoint_min_s",), ("data",), ("data", "dataset"),
         ("base",), ("base", "lr"), ("design", "factors")]


def _set_path(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = value
    return doc


@FEW
@given(path=st.sampled_from(PATHS), value=values)
# what hypothesis found once, pinned so a regression is caught on every run
@example(path=("budget", "time_s"), value=[None])
@example(path=("budget", "time_s"), value=":")
def test_study_files_load_or_fail_with_one_line(tmp_path, path, value):
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(_set_path(SMOKE, path, value)))
    one_line_or_ok(load_study, str(f), "smoke")


# a k-fold CV study with pruning across folds: its cv.prune key takes any value too
CV = {**SMOKE, "cv": {"folds": 4, "prune": {"name": "wilcoxon", "options": {"p_threshold": 0.3}}}}
CV_PATHS = [("cv", "prune"), ("cv", "prune", "name"), ("cv", "prune", "options"), ("cv", "folds"),
            ("cv", "prune", "options", "p_threshold"), ("cv", "prune", "options", "n_startup_steps")]


@FEW
@given(path=st.sampled_from(CV_PATHS), value=values)
@example(path=("cv", "prune", "options", "n_startup_steps"), value=float("nan"))
@example(path=("cv", "prune", "options", "p_threshold"), value=0.0)
@example(path=("cv", "prune", "options"), value={"1": 2})
def test_cv_prune_options_load_or_fail_with_one_line(tmp_path, path, value):
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(_set_path(CV, path, value)))
    one_line_or_ok(load_study, str(f), "smoke")


SPACE = {"loss": {"type": "categorical", "choices": ["ce", "focal"]},
         "focal_gamma": {"type": "float", "low": 0.5, "high": 4.0, "when": {"loss": "focal"}},
         "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "epochs": {"type": "int", "low": 2, "high": 4}}
SPACE_PATHS = [(k,) for k in SPACE] + [(k, f) for k in SPACE for f in
                                      ("type", "choices", "low", "high", "log", "step", "when", "value")]


@FEW
@given(path=st.sampled_from(SPACE_PATHS), value=values)
@example(path=("focal_gamma", "when"), value=True)
@example(path=("focal_gamma", "step"), value=True)
@example(path=("lr", "log"), value="no")
def test_search_spaces_parse_or_fail_with_one_line(path, value):
    import optuna

    space = one_line_or_ok(parse_space, _set_path(SPACE, path, value), "space.yaml")
    if space is not None:  # what parses can be sampled
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        one_line_or_ok(space.sample, study.ask())


def test_a_search_space_with_an_empty_range_is_refused():
    with pytest.raises(FerError, match=r"'lr': empty range, low \(0.01\) must be < high \(0.01\)"):
        parse_space({"lr": {"type": "float", "low": 0.01, "high": 0.01}}, "space.yaml")


@FEW
@given(items=st.lists(st.one_of(st.text(max_size=20),
                                st.tuples(st.sampled_from(["lr", "loss", "epochs", "seed", "batch_size", "sampler",
                                                           "img_size", "mixup_alpha", "", "nope"]),
                                          st.text(max_size=10)).map("=".join)), max_size=4))
def test_set_overrides_build_or_fail_with_one_line(items):
    one_line_or_ok(build_config, None, items)
    for item in items:
        one_line_or_ok(parse_override, item)


au_tokens = st.one_of(st.integers(0, 99).map(str), st.sampled_from(["null", "L12", "r4", "AD19", "BL18", "t23", "L12L",
                                                                    "", " ", "+", "٣", "²", "-1"]), st.text(max_size=4))


@settings(max_examples=50, deadline=None)
@given(tokens=st.lists(au_tokens, max_size=6), sep=st.sampled_from(["+", " + ", "++"]))
def test_au_label_strings_never_crash(tokens, sep):
    parsed = parse_au_label(sep.join(tokens))
    assert parsed.aus <= {1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 16, 17, 20, 22, 24, 25, 26, 27}


cells = st.one_of(st.sampled_from(["a", "b", "0", "1", "-1", "--1", "²", "٣", "13", "train", "val", "test", "2", "",
                                   "img.png", "missing.png", "1+4", "null"]), st.text(max_size=6))


@FEW
@given(rows=st.lists(st.tuples(cells, cells, cells, cells), min_size=0, max_size=5),
       header=st.sampled_from(["path,label,aus,split", "path,label,split", "label,split", "path,label,aus,split,x"]),
       sidecar=st.one_of(st.none(), st.binary(max_size=12), st.text(max_size=12)))
@example(rows=[("img.png", "--1", "", "train")], header="path,label,aus,split", sidecar=None)
@example(rows=[("img.png", "²", "", "train")], header="path,label,aus,split", sidecar=None)
@example(rows=[], header="path,label,aus,split", sidecar=b"\x80")
def test_manifest_csvs_read_or_fail_with_one_line(tmp_path, rows, header, sidecar):
    img = tmp_path / "img.png"
    if not img.exists():
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header.split(","))
    for r in rows:
        w.writerow(r)
    (tmp_path / "m.csv").write_text(buf.getvalue())
    side = tmp_path / "classes.txt"
    side.unlink(missing_ok=True)
    if isinstance(sidecar, bytes):
        side.write_bytes(sidecar)
    elif sidecar is not None:
        side.write_text(sidecar)
    one_line_or_ok(read_manifest, tmp_path / "m.csv")


# -- through the CLI: one line on stderr, exit 2, no traceback, nothing stored ---------------------------


def _run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def _stored_studies(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return [r[0] for r in conn.execute("SELECT study_name FROM studies")]
        except sqlite3.OperationalError:
            return []


BAD_DATA_STUDY = """
name: bad-data
question: does bad data stop the launch before anything is stored?
data: {{dataset: manifest, data_path: {csv}}}
base: {{backbone: test_resnet, img_size: 32, epochs: 1, warmup_epochs: 0, batch_size: 4}}
seeds: [0]
design: {{kind: one_at_a_time, baseline: plain, variants: {{focal: {{loss: focal}}}}}}
"""


def _bad_manifest(problem: str, tmp_path: Path) -> Path:
    """A two-class manifest (train/val/test images of a and b), spoilt as ``problem`` says."""
    rows = []
    for i, (label, split) in enumerate([("a", "train"), ("b", "train"), ("a", "val"), ("b", "val"), ("a", "test"),
                                        ("b", "test")]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        rows.append([p.name, label, "1+4", split])
    if problem == "corrupt":
        (tmp_path / "0.png").write_bytes(b"not an image at all")
    elif problem == "zero_byte":
        (tmp_path / "0.png").write_bytes(b"")
    elif problem == "bomb":  # a PNG header claiming 20000 x 20000 pixels: PIL's decompression-bomb guard
        (tmp_path / "0.png").write_bytes(_png_header(20000, 20000))
    elif problem == "outside":  # a manifest naming a file outside its folder (any file the user can read)
        rows[0][0] = "/etc/passwd"
    elif problem == "truncated":
        whole = (tmp_path / "0.png").read_bytes()  # header intact, pixel data cut in half
        (tmp_path / "0.png").write_bytes(whole[: len(whole) // 2])
    elif problem == "empty_class":
        rows[1][1] = "a"  # class b keeps val/test images but no training image
        (tmp_path / "classes.txt").write_text("a\nb\n")
    elif problem == "one_class":  # every image is an a: a classifier would score 1.0 on it
        for r in rows:
            r[1] = "a"
    elif problem == "no_val":  # nothing to select an epoch on
        rows[2][3] = rows[3][3] = "train"
    else:
        (tmp_path / "classes.txt").write_text("a\nb\n")
        rows[2][1] = "c"
    (tmp_path / "m.csv").write_text("path,label,aus,split\n" + "".join(",".join(r) + "\n" for r in rows))
    return tmp_path / "m.csv"


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` pixels (with no pixel data worth decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


BAD_DATA_NEEDLE = {"corrupt": "0.png: cannot decode image", "truncated": "0.png: cannot decode image",
                   "zero_byte": "0.png: cannot decode image", "bomb": "0.png: cannot decode image",
                   "outside": "m.csv:2: image '/etc/passwd' lies outside the manifest's folder",
                   "empty_class": "class 'b' has no training images", "unknown_label": "m.csv:4: unknown class 'c'",
                   "one_class": "m.csv: only class 'a' has training images; training needs at least 2 classes",
                   "no_val": "m.csv: no validation images; training needs at least 2 classes with training images "
                             "and at least one validation image"}


BAD_DATA = ["corrupt", "truncated", "zero_byte", "bomb", "outside", "empty_class", "unknown_label", "one_class",
            "no_val"]


@pytest.mark.parametrize("problem", BAD_DATA)
def test_bad_data_stops_the_launch_with_one_line_and_stores_nothing(problem, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    csv_path = _bad_manifest(problem, tmp_path)
    (tmp_path / "bad.yaml").write_text(BAD_DATA_STUDY.format(csv=csv_path))
    db = tmp_path / "s.db"
    rc, err = _run_cli(capsys, "launch", str(tmp_path / "bad.yaml"), "--profile", "smoke", "--storage", f"sqlite:///{db}")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert BAD_DATA_NEEDLE[problem] in lines[0], lines[0]  # the data problem itself, not some earlier config error
    assert "Traceback" not in err
    assert _stored_studies(db) == []  # no empty or half-described study left behind
    import ray

    assert not ray.is_initialized()  # the Ray the launch started in the background is shut down again


@pytest.mark.parametrize("problem", BAD_DATA)
def test_validate_refuses_the_data_launch_refuses(problem, tmp_path, capsys, monkeypatch):
    """``validate`` runs the launch's data checks without decoding pixels: the same one line for all but a
    truncated image (its header is intact), which it passes while saying that pixels were not decoded."""
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    csv_path = _bad_manifest(problem, tmp_path)
    (tmp_path / "bad.yaml").write_text(BAD_DATA_STUDY.format(csv=csv_path))
    rc = main(["validate", str(tmp_path / "bad.yaml"), "--profile", "smoke"])
    out, err = capsys.readouterr()
    if problem == "truncated":
        assert rc == 0 and "not checked: image pixel data is not decoded" in out, out + err
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert BAD_DATA_NEEDLE[problem] in lines[0] and "Traceback" not in err, lines[0]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.pt"))  # nothing decoded


def test_a_non_utf8_image_name_is_one_line_in_inspect_train_validate_and_launch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "faces"
    for c in ("happy", "sad"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    bad = os.fsencode(root / "happy") + b"/\xff\xfe-bad.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(bad)
    db = tmp_path / "s.db"
    for argv in (["data", "inspect", str(root)],
                 ["train", "--set", "dataset=folder", "--set", f"data_path={root}", "--set", "epochs=1",
                  "--set", "warmup_epochs=0", "--save", str(tmp_path / "m.pt")],
                 ["validate", "smoke", "--data", str(root)],
                 ["launch", "smoke", "--profile", "smoke", "--data", str(root), "--storage", f"sqlite:///{db}"]):
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (argv, err)
        assert "image file name" in lines[0] and "\\udcff\\udcfe-bad.png" in lines[0] and "not UTF-8" in lines[0]
    assert not db.exists() and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("storage", ["", "sqlite:///{tmp}/\udcff.db"])
def test_an_empty_or_non_utf8_storage_url_is_refused_before_anything_is_written(storage, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in (["launch", "smoke", "--profile", "smoke"], ["status", "smoke"], ["studies"]):
        rc = main([*cmd, "--storage", storage.format(tmp=tmp_path)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: --storage: ") and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_extends_naming_a_non_study_file_is_refused_without_echoing_it(tmp_path, capsys):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hunter2:20228:0:99999:7:::\n")
    for target in (str(secret), "/etc/shadow", "/etc/passwd"):
        (tmp_path / "e.yaml").write_text(f"name: e\nquestion: q\nextends: {target}\n")
        rc = main(["validate", str(tmp_path / "e.yaml")])
        err = capsys.readouterr().err
        assert rc == 2 and "is not a study file" in err and len(err.strip().splitlines()) == 1, err
        assert "hunter2" not in err and "root:" not in err and "99999" not in err


@pytest.mark.parametrize("config", ["", "/dev/null", "empty.yaml", "blank.yaml"])
def test_an_empty_train_config_is_refused(config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "blank.yaml").write_text("# only a comment\n{}\n")
    rc = main(["train", "--config", config, "--save", str(tmp_path / "m.pt")])
    out, err = capsys.readouterr()
    assert rc == 2 and "empty" in err and len(err.strip().splitlines()) == 1 and "config:" not in out, err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("kind", ["teacher", "pretrained"])
@pytest.mark.parametrize("content", ["text", "pickle"])
def test_a_bad_teacher_or_pretrained_file_is_one_line_before_data_and_model_load(kind, content, tmp_path, capsys):
    import pickle

    bad = tmp_path / "w.pt"
    if content == "text":
        bad.write_text("root:x:0:0:root:/root:/bin/bash\n")
    else:  # a pickle that would create a marker file when unpickled
        bad.write_bytes(pickle.dumps(_Marker(tmp_path / "pwned")))
    sets = {"teacher": [f"teacher={bad}", "distill_alpha=0.5"],
            "pretrained": ["pretrained=file", f"pretrained_path={bad}"]}[kind]
    rc = main(["train", *[a for kv in ["epochs=1", "warmup_epochs=0", *sets] for a in ("--set", kv)]])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), err  # no torch warning besides
    assert "config:" not in out and "data:" not in out, out  # before the data (and the model) were loaded
    assert not (tmp_path / "pwned").exists()


class _Marker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("problem", ["one_class", "no_val"])
def test_train_refuses_data_it_cannot_train_on_before_training(problem, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    csv_path = _bad_manifest(problem, tmp_path)
    sets = ["dataset=manifest", f"data_path={csv_path}", "img_size=32", "backbone=test_resnet", "epochs=1",
            "warmup_epochs=0"]
    rc = main(["train", *[a for kv in sets for a in ("--set", kv)], "--save", str(tmp_path / "model.pt")])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert BAD_DATA_NEEDLE[problem] in lines[0] and "Traceback" not in err
    assert "data:" not in out and not (tmp_path / "model.pt").exists()  # refused before training


@pytest.mark.parametrize("name", ["x'; DROP TABLE studies; --", "$(touch pwned)", "a b", "../etc/x", "`id`", "a;b|c&d"])
def test_study_names_with_sql_or_shell_metacharacters_are_refused(name, tmp_path, capsys):
    doc = _set_path(SMOKE, ("name",), name)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    db = tmp_path / "s.db"
    rc, err = _run_cli(capsys, "launch", str(tmp_path / "s.yaml"), "--profile", "smoke", "--storage", f"sqlite:///{db}")
    assert rc == 2 and err.startswith("error: ") and "name must match" in err and len(err.strip().splitlines()) == 1
    assert _stored_studies(db) == [] and not (tmp_path / "pwned").exists()
    # status/report look the name up as a bound parameter: a miss, never SQL
    rc, err = _run_cli(capsys, "status", name, "--storage", f"sqlite:///{db}")
    assert rc == 2 and "no study" in err


def test_yaml_python_tags_are_refused_with_one_line(tmp_path, capsys):
    (tmp_path / "evil.yaml").write_text(f"name: !!python/object/apply:os.system ['touch {tmp_path}/pwned']\n"
                                        "question: q\n")
    rc, err = _run_cli(capsys, "validate", str(tmp_path / "evil.yaml"))
    assert rc == 2 and err.startswith("error: ") and "invalid YAML" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "cfg.yaml").write_text("lr: !!python/object/new:builtins.float [1]\n")
    with pytest.raises(FerError, match="invalid YAML"):
        build_config(tmp_path / "cfg.yaml")
    with pytest.raises(FerError):
        parse_override("lr=!!python/name:os.system")
    assert not (tmp_path / "pwned").exists()


def _make_unwritable(path: Path) -> bool:
    """Make ``path`` unwritable even for root (CI runs as root, which file modes do not stop):
    ``chattr +i``; False where neither works."""
    if os.geteuid() != 0:
        path.chmod(0o555 if path.is_dir() else 0o444)
        return True
    try:
        return subprocess.run(["chattr", "+i", str(path)], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _make_writable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], capture_output=True, timeout=30)
    path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_storage_that_cannot_be_written_stops_the_launch_with_one_line(what, tmp_path, capsys):
    (tmp_path / "db").mkdir()
    db = tmp_path / "db" / "s.db"
    optuna.create_study(study_name="other", storage=f"sqlite:///{db}")  # tables exist: opening works, writing not
    target = db if what == "file" else db.parent
    if not _make_unwritable(target):
        pytest.skip("cannot make a file unwritable here (root, and no chattr +i on this file system)")
    try:
        rc, err = _run_cli(capsys, "launch", "smoke", "--profile", "smoke", "--storage", f"sqlite:///{db}")
    finally:
        _make_writable(target)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: storage sqlite:///{db} cannot be written ("), lines[0]
    assert ("readonly database" if what == "file" else "unable to open database file") in lines[0]
    assert _stored_studies(db) == ["other"]
    import ray

    assert not ray.is_initialized()  # the Ray the launch started in the background is shut down again


# -- every subcommand's options, fuzzed in-process: exit 0 or 2, one line on 2, no traceback, nothing written on 2 --

# values a careless or hostile user types: in and out of range, negative, huge, empty, not numbers,
# a lone surrogate (what undecodable argv bytes become), NUL
INTS = st.one_of(st.integers(-3, 12).map(str), st.integers(-(10**30), 10**30).map(str),
                 st.sampled_from(["", "abc", "1.5", " 7", "0x10", "1e3", "\udcff", "٣", "65536",
                                  "99999999999999999999", "9" * 5000]))  # past int()'s 4300-digit limit
TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["", "\udcff", "s", "smoke", "x;y", "a\x00b", "$(touch pwned)"]))
# relative to the per-example working directory: a file, a directory, missing parents, non-UTF-8, /proc
PATHS = st.sampled_from(["f.txt", "d", "d/new", "d/new.pt", "missing/sub/x", "/proc/x", "/proc/x/y.pt", "", "bad.yaml",
                         "\udcff", "a\x00b", "store.db"])
STUDIES = st.one_of(st.sampled_from(["s", "smoke", "bad.yaml", "f.txt", "d", "missing", "", "../etc/x"]), TEXT)
STORAGES = st.sampled_from(["sqlite:///store.db", "postgresql://u:SECRET@h:abc/db",
                            "postgresql://u:SECRET@127.0.0.1:1/db", "mysql://x", "", "not a url",
                            "sqlite:///missing/dir/x.db", "sqlite:///d"])
PROFILES = st.sampled_from(["smoke", "cpu", "gpu", "huge", ""])
FLAG = st.just(None)  # an option without a value

# subcommand -> (positional strategies, {option: value strategy}, poison options). A command that would do real
# work (train, launch Ray, serve, render a data set) always ends with one poison option: the last value of an
# option wins, so a poison placed last cannot be overridden, and each is refused while the arguments are parsed.
STORAGE_OPTS = {"--storage": STORAGES}
COMMANDS: dict[str, tuple[list, dict, list[list[str]]]] = {
    "launch": ([STUDIES], {**STORAGE_OPTS, "--address": TEXT, "--profile": PROFILES, "--max-concurrent": INTS,
                           "--resume": FLAG, "--restart": FLAG, "--runs-dir": PATHS, "--verbose": FLAG,
                           "--artifacts": PATHS, "--warm-start": TEXT},
              [["--max-concurrent", "0"], ["--max-concurrent", "-1"], ["--runs-dir", "f.txt"], ["--profile", "huge"],
               ["--runs-dir", "/proc/x"]]),
    "confirm": ([STUDIES], {**STORAGE_OPTS, "--top": INTS, "--seeds": INTS, "--out": PATHS, "--profile": PROFILES,
                            "--runs-dir": PATHS, "--artifacts": PATHS, "--verbose": FLAG, "--address": TEXT,
                            "--max-concurrent": INTS, "--data": PATHS, "--set": TEXT},
                [["--out", "f.txt"], ["--runs-dir", "f.txt"], ["--profile", "huge"], ["--out", "/proc/x"],
                 ["--max-concurrent", "0"], ["--top", "51"], ["--seeds", "1"]]),
    "confirm --no-launch": ([STUDIES], {**STORAGE_OPTS, "--top": INTS, "--seeds": INTS, "--out": PATHS,
                                        "--artifacts": PATHS}, []),
    "validate": ([STUDIES], {"--profile": PROFILES}, []),
    "studies": ([], STORAGE_OPTS, []),
    "status": ([STUDIES], STORAGE_OPTS, []),
    "report": ([STUDIES], {**STORAGE_OPTS, "--format": st.sampled_from(["md", "csv", "all", "pdf", ""]),
                           "--out": PATHS, "--artifacts": PATHS, "--quiet": FLAG}, []),
    "ensemble": ([STUDIES], {**STORAGE_OPTS, "--top": INTS, "--by": st.sampled_from(["macro_f1", "tail_f1", "loss"]),
                             "--diverse": FLAG, "--tta": FLAG, "--name": TEXT, "--artifacts": PATHS}, []),
    "export": ([STUDIES], {**STORAGE_OPTS, "--trial": INTS, "--out": PATHS, "--artifacts": PATHS}, []),
    "dashboard": ([], {**STORAGE_OPTS, "--host": TEXT, "--port": INTS, "--artifacts": PATHS},
                  [["--port", "0"], ["--port", "99999"], ["--port", "-1"], ["--host", ""], ["--port", "http"]]),
    "train": ([], {"--config": PATHS, "--set": st.one_of(TEXT, st.tuples(st.sampled_from(
        ["lr", "loss", "epochs", "seed", "img_size", "backbone", ""]), TEXT).map("=".join)), "--save": PATHS,
                   "--data": PATHS},
              [["--save", "d"], ["--save", "/proc/x/y.pt"], ["--config", "bad.yaml"], ["--set", "loss=hinge"],
               ["--set", "epochs=-1"]]),
    "data synth": ([], {"--out": PATHS, "--seed": INTS, "--img-size": INTS},
                   [["--seed", "-1"], ["--img-size", "47"], ["--img-size", "225"], ["--out", "f.txt"],
                    ["--out", "/proc/x"]]),
    "data inspect": ([PATHS], {"--kind": st.sampled_from(["rafce", "manifest", "folder", "zip"]), "--img-size": INTS,
                               "--cache-dir": PATHS}, []),
}


@st.composite
def argv_for(draw, command: str) -> list[str]:
    positionals, options, poison = COMMANDS[command]
    argv = command.split()
    chosen = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=len(options)))
    for opt in chosen:
        value = draw(options[opt])
        argv += [opt] if value is None else [opt, value]
    if command == "export" and draw(st.booleans()):
        argv += ["--trial", draw(INTS)]  # usually present: it is required
    argv += [draw(p) for p in positionals]
    if poison:
        argv += draw(st.sampled_from(poison))
    return argv


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time: what a command wrote shows as a change."""
    return {str(p.relative_to(root)): (p.lstat().st_size if not p.is_dir() else 0, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.fixture(scope="module")
def cli_template(tmp_path_factory) -> Path:
    """The files every example starts from: a storage with an empty study ``s``, a file, a directory, a
    non-UTF-8 YAML file."""
    root = tmp_path_factory.mktemp("cli-template")
    optuna.create_study(study_name="s", storage=f"sqlite:///{root / 'store.db'}")
    (root / "f.txt").write_text("hello\n")
    (root / "d").mkdir()
    (root / "bad.yaml").write_bytes(b"name: \xff\xfe\nquestion: q\n")
    return root


def _main_in(work, env: dict[str, str], argv: list[str], capsys) -> tuple[int, str]:
    """``fer-study ARGV`` in-process, run from ``work`` with ``env`` set (both restored after): its exit
    code (argparse's usage errors 2, --help 0, included) and what it wrote to stderr."""
    saved, cwd = {k: os.environ.get(k) for k in env}, os.getcwd()
    os.environ.update(env)
    os.chdir(work)
    try:
        try:
            rc = main(argv)
        except SystemExit as exit_:
            rc = exit_.code
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_option_is_validated_at_the_edge(command, cli_template, tmp_path, capsys):
    import shutil

    import ray

    n = [0]

    @settings(max_examples=int(os.environ.get("HYP_N", 30)), deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(argv=argv_for(command))
    def check(argv: list[str]) -> None:
        n[0] += 1
        work = tmp_path / f"ex{n[0]}"
        shutil.copytree(cli_template, work)
        before = _tree(work)
        env = {"FER_STUDY_STORAGE": f"sqlite:///{work / 'store.db'}", "FER_STUDY_ARTIFACTS": str(work / "artifacts"),
               "FER_STUDY_RUNS": str(work / "runs"), "FER_STUDY_CACHE": str(work / "cache"),
               "FER_STUDY_PROFILE": "smoke"}
        rc, err = _main_in(work, env, argv, capsys)
        assert rc in (0, 2), (argv, rc, err)
        assert "Traceback" not in err and "SECRET" not in err, (argv, err)
        if rc == 2:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
            assert _tree(work) == before, (argv, err, set(_tree(work)) ^ set(before))
        assert not ray.is_initialized(), argv  # no example may get as far as starting Ray
        shutil.rmtree(work)

    check()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["dashboard", "--port", "99999"], "--port: must be an integer in 1..65535"),
        (["dashboard", "--port", "-1"], "--port: must be an integer in 1..65535"),
        (["dashboard", "--port", "0"], "--port: must be an integer in 1..65535"),
        (["launch", "smoke", "--max-concurrent", "0"], "--max-concurrent: must be an integer in 1..10000"),
        (["ensemble", "s", "--top", "99999999999999999999"], "--top: must be an integer in 1..1000"),
        (["data", "synth", "--out", "o", "--seed", "-1"], "--seed: must be an integer in 0..4294967295"),
        (["data", "synth", "--out", "f.txt"], "f.txt exists and is not a directory"),
        (["data", "synth", "--out", "/proc/x"], "cannot write in /proc"),
        (["export", "s", "--trial", "1", "--out", "d"], "d is a directory"),
        (["train", "--save", "d"], "d is a directory"),
        (["train", "--config", "bad.yaml"], "bad.yaml: config file is not UTF-8"),
        (["validate", "bad.yaml"], "bad.yaml: not UTF-8"),
        (["status", "s", "--storage", "postgresql://u:SECRET@h:abc/db"], "the port in 'postgresql://u:***@h:abc/db'"),
        (["status", "nosuch", "--storage", "sqlite:///absent.db"], "the database file does not exist"),
    ],
)
def test_each_listed_bad_option_is_one_line_before_any_work(argv, needle, cli_template, tmp_path, capsys,
                                                            monkeypatch):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(cli_template, work)
    monkeypatch.chdir(work)
    before = _tree(work)
    try:
        rc = main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "SECRET" not in err and _tree(work) == before


def test_seeds_are_checked_in_every_profile_not_only_the_selected_one(tmp_path):
    doc = {**SMOKE, "seeds": "abc", "profiles": {**(SMOKE.get("profiles") or {}), "smoke": {"seeds": [0]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(FerError, match=r"s.yaml: seeds must be a non-empty list of non-negative integers, got 'abc'"):
        load_study(str(tmp_path / "s.yaml"), "smoke")
    doc = {**SMOKE, "profiles": {"smoke": {"seeds": [0]}, "gpu": {"seeds": [-1]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(FerError, match=r"profiles.gpu.seeds must be"):
        load_study(str(tmp_path / "s.yaml"), "smoke")


def test_a_bad_option_fails_before_torch_ray_or_optuna_are_imported(tmp_path):
    """The checks run while the arguments are parsed: a typo costs no torch/Ray start-up (seconds)."""
    code = ("import sys\nfrom fer_core.cli import main\n"
            "for argv in (['dashboard', '--port', '99999'], ['launch', 'smoke', '--max-concurrent', '-1'],\n"
            "             ['train', '--save', '.'], ['data', 'synth', '--out', 'o', '--seed', '-1']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 2, argv\n"
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'timm') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]) == 4, proc.stderr


# -- arbitrary bytes as file names, paths, URLs and YAML, to the commands that read them (issue 37) ---------------

YAML_BITS = st.sampled_from(["[", "]", "{", "}", "&a ", "*a", ": ", "- ", "!!", "!!python/name:os.system", "\n", "  ",
                             "'", '"', "#", "<<: ", "name: x", "seeds: ", "design:", "extends: ", "\udcff", "\x00",
                             "? ", "|", ">", ",", "1e9", "~"])
# YAML built from its special characters (nesting, anchors, aliases, tags, merges) or plain arbitrary bytes
YAML_DOCS = st.one_of(st.lists(YAML_BITS, max_size=40).map("".join).map(lambda t: t.encode("utf-8", "surrogateescape")),
                      st.binary(max_size=200))
NAMES = st.binary(min_size=1, max_size=24).map(lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_"))
# (argv, what the example writes first): {"file": content} under a fuzzed name, "{f}" in argv names that file
FUZZ = st.one_of(
    st.tuples(st.just(["validate", "{f}.yaml"]), YAML_DOCS),
    st.tuples(st.just(["train", "--config", "{f}", "--set", "epochs=0"]), YAML_DOCS),
    st.tuples(st.just(["train", "--set", "lr={y}", "--set", "epochs=0"]), YAML_DOCS),
    st.tuples(st.just(["validate", "smoke", "--data", "{f}"]), st.binary(max_size=64)),
    st.tuples(st.just(["data", "inspect", "faces", "--cache-dir", "cache"]), st.binary(max_size=64)),  # image {f}.png
    st.tuples(st.just(["studies", "--storage", "sqlite:///{f}"]), st.just(b"")),
    st.tuples(st.just(["status", "s", "--storage", "{u}"]), st.binary(max_size=60)),
    st.tuples(st.just(["launch", "no-such-study", "--storage", "{u}"]), st.binary(max_size=60)),
)


def _fuzz_template(root: Path) -> Path:
    root.mkdir()
    optuna.create_study(study_name="s", storage=f"sqlite:///{root / 'store.db'}")
    for c in ("happy", "sad"):
        (root / "faces" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(root / "faces" / c / f"{i}.png")
    return root


def test_arbitrary_bytes_as_names_paths_urls_and_yaml_exit_0_or_2_with_one_line(tmp_path, capsys):
    """Hypothesis feeds arbitrary bytes (undecodable ones arrive as lone surrogates, as argv does) as file
    names, --data paths, storage URLs and YAML (files, --config, --set) to the commands in-process: exit 0
    or 2, never a traceback, one ``error:`` line on 2, and nothing written on 2. Under a minute."""
    import shutil
    import time

    template = _fuzz_template(tmp_path / "template")
    n, t0 = [0], time.perf_counter()

    @settings(max_examples=int(os.environ.get("HYP_N", 150)), deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(case=FUZZ, name=NAMES)
    def check(case, name: bytes) -> None:
        argv_t, content = case
        n[0] += 1
        work = tmp_path / f"ex{n[0]}"
        shutil.copytree(template, work)
        fname = os.fsdecode(name)
        if argv_t[0] == "data":
            (work / "faces" / "happy" / f"{fname}.png").write_bytes(content)
        elif "{f}" in " ".join(argv_t) or "{f}.yaml" in argv_t:
            target = work / (f"{fname}.yaml" if "{f}.yaml" in argv_t else fname)
            if argv_t[0] != "studies" and target.name not in (".", ".."):
                try:
                    target.write_bytes(content)
                except IsADirectoryError:
                    pass
        text = content.decode("utf-8", "surrogateescape")
        argv = [a.replace("{f}", str(work / fname)).replace("{u}", text).replace("{y}", text) for a in argv_t]
        before = _tree(work)
        env = {"FER_STUDY_STORAGE": f"sqlite:///{work / 'store.db'}", "FER_STUDY_ARTIFACTS": str(work / "artifacts"),
               # outside the example's folder: validate caches timm's model list there (a cache, not state)
               "FER_STUDY_RUNS": str(work / "runs"), "FER_STUDY_CACHE": str(tmp_path / "cache")}
        rc, err = _main_in(work, env, argv, capsys)
        assert rc in (0, 2), (argv, rc, err)
        assert "Traceback" not in err, (argv, err)
        if rc == 2:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
            assert _tree(work) == before, (argv, err, set(_tree(work)) ^ set(before))
        shutil.rmtree(work)

    check()
    assert time.perf_counter() - t0 < 60
