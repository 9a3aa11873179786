from __future__ import annotations

import pytest
from helpers import fer_cli

from fer_core.cli import main


def test_train_prints_per_class_table_and_test_metrics(standin, cache_dir, capsys, tmp_path):
    save = tmp_path / "model.pt"
    rc = main(["train", "--set", "backbone=test_resnet", "--set", "img_size=48", "--set", "epochs=1",
               "--set", "warmup_epochs=0", "--set", f"cache_dir={cache_dir}", "--save", str(save)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Happily sad (tail)" in out and "Angrily disgusted" in out
    assert "validation macro-F1" in out and "test macro-F1" in out and "from cache" in out
    assert save.stat().st_size > 0


def test_train_reads_the_users_data_given_as_for_launch(tmp_path, capsys, monkeypatch):
    """`train --data PATH` as `launch --data`: the kind detected, the path used; --set dataset= still forces one."""
    from PIL import Image

    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    faces = tmp_path / "my faces #1: v2"  # YAML would read ' #' as a comment and ': ' as a mapping
    for c, colour in enumerate(["red", "blue"]):
        (faces / f"class{c}").mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (32, 32), colour).save(faces / f"class{c}" / f"{i}.png")
    rc = main(["train", "--data", str(faces), "--set", "backbone=test_resnet", "--set", "img_size=32",
               "--set", "epochs=1", "--set", "warmup_epochs=0"])
    out = capsys.readouterr().out
    assert rc == 0 and "dataset=folder" in out and "class1" in out and "test macro-F1" in out
    rc = main(["train", "--data", str(faces), "--set", "dataset=rafce", "--set", "epochs=2"])
    assert rc == 2 and "not a RAF-CE directory" in capsys.readouterr().err  # the forced kind is read: no folder


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--set", "loss=hinge"], "loss: unknown loss 'hinge'; valid: "),
        (["train", "--set", "backbone=resnet5000"], "backbone: unknown timm model"),
        (["train", "--set", "aug_strength=2"], "config key 'aug_strength'"),
        (["train", "--set", "learning_rate=0.1"], "unknown config key 'learning_rate'"),
        (["train", "--config", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read config file"),
        (["train", "--set", "loss=weighted_ce", "--set", "sampler=balanced"], "allow_double_weighting: true"),
        (["data", "inspect", "/nonexistent/dir"], "/nonexistent/dir"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(args, needle):
    proc = fer_cli(*args, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_data_synth_then_inspect_reports_quirks(tmp_path, cache_dir, capsys):
    out = tmp_path / "rafce"
    assert main(["data", "synth", "--out", str(out), "--img-size", "48", "--seed", "3"]) == 0
    assert (out / "RAFCE_emolabel.txt").exists()
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "--img-size", "48", "--cache-dir", cache_dir]) == 0
    text = capsys.readouterr().out
    for needle in ("Happily surprised", "side", "malformed", "vocab"):
        assert needle in text


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"fer-study {version('fer-study')}"


def test_profile_and_out_say_the_same_thing_everywhere():
    """--profile names $FER_STUDY_PROFILE wherever it applies (and says where it does not); every --out says
    whether it is a directory or a file; every --top gives its range."""
    import argparse

    from fer_core.cli import build_parser

    def leaves(parser, path=""):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from (leaves(sub, f"{path} {name}".strip()) if any(
                        isinstance(a, argparse._SubParsersAction) for a in sub._actions) else [(f"{path} {name}".strip(), sub)])

    seen = set()
    for path, sub in leaves(build_parser()):
        for a in sub._actions:
            if "--profile" in a.option_strings:
                assert "$FER_STUDY_PROFILE" in a.help, path
                seen.add("profile")
            if "--out" in a.option_strings:
                assert a.help.split()[0] in ("directory", "file") and a.metavar in ("DIR", "FILE"), (path, a.help)
                seen.add("out")
            if "--top" in a.option_strings:
                assert ".." in a.help, (path, a.help)
                seen.add("top")
    assert seen == {"profile", "out", "top"}
