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


def test_example_report_is_the_generated_one():
    """The docs page's example block is what the report code renders (markers intact, one row per variant
    of the shipped ablation study as its digits twin runs it, baseline first), the README's block is that
    table trimmed by the same code, and splicing a new one replaces only that block."""
    from fer_core.report.readme import END, PAGE, START, splice, trim
    from fer_core.study.spec import load_study

    page, readme = PAGE.read_text(), (ROOT / "README.md").read_text()
    for text in (page, readme):
        assert text.count(START) == 1 and text.count(END) == 1
    block = page.split(START, 1)[1].split(END, 1)[0]
    rows = [ln.split("|")[1].strip().removeprefix("★ ") for ln in block.splitlines()
            if ln.startswith("| ") and "val macro-F1" not in ln and "±" in ln and " +" not in ln.split("|")[1]]
    spec, digits = load_study("imbalance-ablation", "gpu"), load_study("imbalance-ablation-digits", "cpu")
    assert rows == [digits.baseline, *digits.variants]  # the digits twin ran it: the ablation's rows but
    assert list(digits.variants) == [v for v in spec.variants if v not in ("au_multitask", "au_attention")]  # AU rows
    assert readme.split(START, 1)[1].split(END, 1)[0].strip() == trim(block).strip()
    new = splice(page, "#### new table\n")
    assert new.split(START)[0] == page.split(START)[0] and new.split(END)[1] == page.split(END)[1]
    assert "#### new table" in new and "imbalance-ablation: ablation table" not in new.split(START)[1].split(END)[0]


def test_trimmed_example_keeps_the_baseline_the_verdicts_and_the_star():
    """The README's ~10 rows: baseline first, every better/worse row and the ★ row kept before the
    undecided ones, no derived row, verdicts cut to their first clause, and it says how many it left out."""
    from fer_core.report.readme import main_table, trim

    header, rows = main_table("\n".join([
        "| variant | n | Δ test macro_f1 [95% CI] | p (Holm) | MDE 80% | Δ few-shot F1 [95% CI] | verdict |",
        "|:--|--:|:--|--:|--:|:--|:--|",
        "| base | 3 |  |  |  |  | baseline |",
        "| base +posthoc:tau_norm | 3 |  |  |  |  | derived: tau_norm of base (tau 1.0) |",
        *[f"| v{i} | 3 | +0.01 | 0.5 | 0.1 | +0.01 | no detectable difference (Holm p=0.5) |" for i in range(12)],
        "| worse_one | 3 | -0.2 | 0.01 | 0.1 | -0.3 | worse than the baseline (Holm p=0.01) |",
        "| ★ star | 3 | +0.05 | 0.2 | 0.1 | +0.06 | no detectable difference (Holm p=0.2) |"]))
    assert len(rows) == 16 and header[0] == "variant"
    text = trim("\n".join(["| " + " | ".join(header) + " |", "|---|", *("| " + " | ".join(r) + " |" for r in rows)]))
    kept = [ln.split("|")[1].strip() for ln in text.splitlines()[2:] if ln.startswith("| ")]
    assert kept == ["base", *[f"v{i}" for i in range(7)], "worse_one", "★ star"]
    assert "worse than the baseline |" in text and "Holm p" not in text
    assert "10 of 15 trained rows; 5 more" in text


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, tables and HTML comments."""
    out, fenced = [], False
    for i, ln in enumerate(text.splitlines(), 1):
        if ln.startswith("```"):
            fenced = not fenced
            continue
        if not fenced and not ln.startswith("|") and not ln.startswith("<!--"):
            out.append((i, ln))
    return out


def test_readme_is_short_and_timeless():
    """A README read in five minutes: at most 200 lines, prose lines of at most 120 characters, no dated
    figures or history (those belong in benchmarks/RESULTS.md), every local link resolving, and it says
    plainly that the CUDA paths are unverified on a GPU."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    long = [(i, len(ln)) for i, ln in _prose_lines(readme) if len(ln) > 120]
    assert not long, long
    prose = "\n".join(ln for _, ln in _prose_lines(readme))
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b|passed in|measured \d|\bsession\b|\bissue \d", prose)
    assert "CUDA paths have not yet been run on a GPU" in " ".join(readme.split())
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), target
