from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    commands = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.startswith("#")]
    test_cmds = [c for c in commands if "pytest" in c]
    assert len(test_cmds) == 1, test_cmds
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmds[0] in ci.splitlines()


def test_constraints_pin_the_working_torch_pair():
    text = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in text and "torchvision==0.29.1" in text
