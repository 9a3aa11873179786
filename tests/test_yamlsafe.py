"""The one YAML reader (fer_core/yamlsafe.py): every YAML the project reads (study files, search spaces,
``train --config``, ``--set``) is bounded in size, depth and alias expansion, refused with one line."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import fer_core
from fer_core.cli import main
from fer_core.errors import ConfigError
from fer_core.yamlsafe import load_yaml

DEEP = "[" * 100_000 + "]" * 100_000
# ten levels of nine aliases: 9**10 values once expanded (issue 37: validate grew to 3 GB)
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)) + "seeds: *a9\n"


def test_the_loader_reads_ordinary_yaml_and_refuses_a_deep_a_bombed_or_a_huge_text():
    assert load_yaml("a: [1, {b: &x 2}, *x]\n", "f") == {"a": [1, {"b": 2}, 2]}
    assert load_yaml("[" * 40 + "]" * 40, "f") == [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    t0 = time.perf_counter()
    for text, why in ((DEEP, "nested deeper than 50 levels"), (BOMB, "expands to more than 100,000 values"),
                      ("x: " + "y" * (2 << 20), "more than the 1,048,576 allowed")):
        with pytest.raises(ConfigError) as err:
            load_yaml(text, "study.yaml")
        assert str(err.value).startswith("study.yaml: ") and why in str(err.value) and "\n" not in str(err.value)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("where", ["study", "config", "set", "space"])
@pytest.mark.parametrize("payload", ["deep", "bomb"])
def test_every_yaml_the_commands_read_is_bounded(where, payload, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = DEEP if payload == "deep" else BOMB
    if where == "study":
        (tmp_path / "evil.yaml").write_text("name: evil\n" + (f"question: {text}\n" if payload == "deep" else text))
        argv = ["validate", str(tmp_path / "evil.yaml")]
    elif where == "space":
        (tmp_path / "space.yaml").write_text(text if payload == "bomb" else f"lr: {text}\n")
        (tmp_path / "s.yaml").write_text("name: s\nquestion: q\nextends: imbalance-hpo\n"
                                         f"design: {{kind: search, space: {tmp_path / 'space.yaml'}}}\n")
        argv = ["validate", str(tmp_path / "s.yaml")]
    elif where == "config":
        (tmp_path / "c.yaml").write_text(text)
        argv = ["train", "--config", str(tmp_path / "c.yaml"), "--save", str(tmp_path / "out")]
    else:
        argv = ["train", "--set", f"lr={text}", "--save", str(tmp_path / "out")]
    t0 = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert time.perf_counter() - t0 < 20
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err[:2000]
    assert re.search(r"nested deeper|expands to more than", err), err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*.db"))


def test_nothing_else_in_the_package_parses_yaml():
    hits = [f"{p.name}:{n}" for p in Path(fer_core.__file__).parent.rglob("*.py") if p.name != "yamlsafe.py"
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"yaml\.(safe_load|load|compose|parse|scan)\w*\(", line)]
    assert hits == []
