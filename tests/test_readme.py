from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    """README gives one test command; .ci/run runs that very line, and it is the script that sets up and runs
    pytest (the set-up the test command does is scripts/test's, not CI's)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    commands = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.startswith("#")]
    test_cmds = [c for c in commands if "pytest" in c or "scripts/test" in c]
    assert test_cmds == ["scripts/test"], test_cmds
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmds[0] in ci.splitlines()
    script = (ROOT / "scripts" / "test").read_text().splitlines()
    assert script[-1].startswith("exec .venv/bin/python -m pytest -q"), script[-1]
    assert "python3 -m venv .venv" in script and ".venv/bin/pip install -q -c constraints.txt -e '.[test]'" in script


def test_constraints_pin_the_working_torch_pair():
    text = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in text and "torchvision==0.29.1" in text


def test_readme_example_report_is_the_generated_one():
    """The example block is what the report code renders (markers intact, one row per variant of the
    shipped ablation study as its digits twin runs it, baseline first), and splicing a new one replaces
    only that block."""
    from fer_core.report.readme import END, START, splice
    from fer_core.study.spec import load_study

    readme = (ROOT / "README.md").read_text()
    assert readme.count(START) == 1 and readme.count(END) == 1
    block = readme.split(START, 1)[1].split(END, 1)[0]
    rows = [ln.split("|")[1].strip().removeprefix("★ ") for ln in block.splitlines()
            if ln.startswith("| ") and "val macro-F1" not in ln and "±" in ln and " +" not in ln.split("|")[1]]
    spec, digits = load_study("imbalance-ablation", "cpu"), load_study("imbalance-ablation-digits", "cpu")
    assert rows == [digits.baseline, *digits.variants]  # the digits twin ran it: the ablation's rows but
    assert list(digits.variants) == [v for v in spec.variants if v not in ("au_multitask", "au_attention")]  # AU rows
    new = splice(readme, "#### new table\n")
    assert new.split(START)[0] == readme.split(START)[0] and new.split(END)[1] == readme.split(END)[1]
    assert "#### new table" in new and "imbalance-ablation: ablation table" not in new.split(START)[1].split(END)[0]
