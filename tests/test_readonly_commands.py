"""Read-only commands (issue 19, item 4): never create a database, answer without importing torch, Ray
or timm, and `validate` prints the plan it checked (variants, data, backbone) or one line why not."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fer_core.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _one_error(capsys, *argv: str) -> str:
    rc = main(list(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("argv", [["studies"], ["status", "s"], ["report", "s"], ["ensemble", "s"],
                                  ["dashboard"]])
def test_a_missing_storage_is_one_line_and_no_database_file(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER_STUDY_STORAGE", raising=False)
    line = _one_error(capsys, *argv)
    assert f"no storage at sqlite:///{tmp_path}/fer-study.db" in line
    assert list(tmp_path.iterdir()) == []  # no fer-study.db, no reports/, no artifacts dir


def test_read_only_commands_do_not_import_torch_ray_or_timm(tmp_path, monkeypatch):
    from fer_core import config_rules

    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    config_rules.timm_model_names.cache_clear()
    config_rules.timm_model_names()  # timm's names cached once per timm version, as any launch leaves them
    config_rules.timm_model_names.cache_clear()
    db = f"sqlite:///{tmp_path}/x.db"
    code = ("import sys; from fer_core.cli import main\n"
            f"for argv in (['studies', '--storage', '{db}'], ['status', 's', '--storage', '{db}'], "
            "['validate', 'smoke', '--profile', 'smoke'], ['validate', 'imbalance-cv-digits', '--profile', 'cpu']):\n    main(argv)\n"
            "print(sorted(m for m in ('torch', 'ray', 'timm', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "FER_STUDY_CACHE": str(tmp_path / "cache")}, timeout=120)
    assert "is valid" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_validate_prints_the_plan(capsys):
    assert main(["validate", "smoke", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "variants (3, baseline first): plain-ce, balanced_softmax, sampler_sqrt" in out
    assert "data: synthetic" in out and "backbone: test_resnet, 48 px, 2 epochs" in out
    assert "optuna sampler" not in out  # a designed study asks no sampler for anything
    # the data as the trials will read it: classes with their training counts, AU labels
    assert "data: synthetic (generated in the cache): 14 classes, 2709 training images, AU labels: yes" in out
    assert "Happily sad 17" in out
    assert "estimated time: ~" in out and "img/s" in out  # and what the estimate is based on


def _faces(root, size: int = 48) -> None:
    """Two colour classes as class folders (no AU labels), ``size`` px on disk."""
    from PIL import Image

    for c, colour in enumerate(["red", "blue"]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (size, size), colour).save(root / f"class{c}" / f"{i}.png")


def test_validate_reads_the_users_data(capsys, tmp_path):
    _faces(tmp_path / "faces")
    assert main(["validate", "smoke", "--profile", "smoke", "--data", str(tmp_path / "faces")]) == 0
    out = capsys.readouterr().out
    assert f"data: folder at {(tmp_path / 'faces').resolve()}: 2 classes" in out and "AU labels: no" in out
    assert "images 48x48 px on disk" in out and "class0 " in out


def test_data_given_at_launch_without_au_labels_leaves_the_au_rows_out(capsys, tmp_path):
    """--data of a source without AU labels (none of the published FER releases has them): the rows that train
    the AU head would equal the baseline, so they are left out of the plan and said so, not refused."""
    _faces(tmp_path / "faces")
    assert main(["validate", "imbalance-ablation", "--profile", "smoke", "--data", str(tmp_path / "faces")]) == 0
    out = capsys.readouterr().out
    assert "left out: au_multitask, au_attention (they train the AU head; the data given has no AU labels)" in out
    variants = next(ln for ln in out.splitlines() if "variants (" in ln)
    assert "au_multitask" not in variants and "plain-ce, weighted_ce" in variants
    from fer_core.study.spec import load_study

    spec = load_study("imbalance-ablation", "smoke", str(tmp_path / "faces"))
    assert spec.resolved["overrides"]["dropped_variants"] == ["au_multitask", "au_attention"]
    assert "au_multitask" not in spec.variants and spec.n_planned() == len(spec.variants) + 1


@pytest.mark.parametrize("command", ["validate", "launch"])
def test_a_study_file_whose_own_data_lacks_au_labels_is_refused(command, capsys, tmp_path, monkeypatch):
    """Data named in the study file (not given at launch): its author planned the AU rows, so they are refused."""
    monkeypatch.chdir(tmp_path)
    _faces(tmp_path / "faces")
    (tmp_path / "mine.yaml").write_text(f"name: mine\nextends: {ROOT / 'studies' / 'imbalance-ablation.yaml'}\n"
                                        f"data: {{dataset: folder, data_path: {tmp_path / 'faces'}}}\n")
    extra = ["--storage", f"sqlite:///{tmp_path}/s.db"] if command == "launch" else []
    line = _one_error(capsys, command, str(tmp_path / "mine.yaml"), "--profile", "smoke", *extra)
    assert "variants 'au_multitask', 'au_attention' need AU labels (au_weight 0.5)" in line and "has none" in line
    assert "drop_variants: [au_multitask, au_attention]" in line  # the way out, in the same line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces", "mine.yaml"]  # nothing stored, no database


def test_data_inspect_reports_the_size_on_disk(capsys, tmp_path, cache_dir):
    _faces(tmp_path / "faces", size=48)
    assert main(["data", "inspect", str(tmp_path / "faces"), "--cache-dir", cache_dir]) == 0
    assert "decoded size: 48 px (first image on disk: 48x48 px)" in capsys.readouterr().out


def test_validate_refuses_a_data_path_that_does_not_exist(capsys, tmp_path):
    line = _one_error(capsys, "validate", "smoke", "--profile", "smoke", "--set", "dataset=folder",
                      "--set", f"data_path={tmp_path}/nope")
    assert f"data_path: {tmp_path}/nope: no such file or directory" in line


def test_a_study_file_without_a_name_says_so(capsys, tmp_path):
    doc = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
    doc.pop("name")
    doc.pop("extends", None)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    line = _one_error(capsys, "validate", str(tmp_path / "s.yaml"))
    assert "name: missing" in line and "None" not in line


def test_every_option_has_help_text():
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
            elif (action.option_strings and not action.required and action.nargs != 0
                  and "default" not in action.help):  # a flag (nargs 0) is off unless given
                missing.append(f"{path} {'/'.join(action.option_strings)}: no default in its help")

    walk(build_parser(), "fer-study")
    assert not missing


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_shipped_study_passes_the_data_check(profile):
    """No shipped study plans a variant its data cannot train (the digits ablation once ran au_multitask,
    which without AU labels trained the baseline exactly)."""
    from fer_core.study.spec import check_data, load_study

    for f in sorted((ROOT / "studies").glob("*.yaml")):
        assert check_data(load_study(str(f), profile)), f.name


@pytest.mark.parametrize("command", ["validate", "launch"])
def test_a_token_backbone_under_the_attention_head_is_refused_before_any_trial(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = ["--storage", f"sqlite:///{tmp_path}/s.db"] if command == "launch" else []
    line = _one_error(capsys, command, "smoke", "--profile", "smoke", "--set", "head=au_attention",
                      "--set", "backbone=test_vit", *extra)
    assert "smoke.yaml: head: 'au_attention' needs a backbone whose forward_features is a (B,C,H,W)" in line
    assert "backbone 'test_vit' gives (1, " in line and "use head: linear or a convolutional backbone" in line
    assert list(tmp_path.iterdir()) == []  # nothing stored, no database
    # a convolutional backbone under the same head passes the same check
    assert main(["validate", "smoke", "--profile", "smoke", "--set", "head=au_attention"]) == 0
