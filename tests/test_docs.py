"""The documentation site: the reference pages are what scripts/gen_docs.py makes from the code, a new
option, config key or environment variable cannot go undocumented, and `mkdocs build --strict` passes
(a broken link or anchor fails it)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_reference_pages_and_readme_synopsis_are_current():
    gen = _gen_docs()
    stale = [str(p.relative_to(ROOT)) for p, text in gen.generated().items() if p.read_text() != text]
    assert not stale, f"run python scripts/gen_docs.py: {stale}"


def test_every_option_of_every_command_is_in_the_cli_reference_and_the_readme():
    """Read back from the parser itself: each command has a section, each option a row, and the README's
    synopsis names each command with each of its options."""
    from fer_core.cli import build_parser

    gen = _gen_docs()
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    readme = (ROOT / "README.md").read_text().split(gen.SYNOPSIS_START, 1)[1].split(gen.SYNOPSIS_END, 1)[0]
    commands = gen._subcommands(build_parser())
    assert {path for path, _, _ in commands} >= {"launch", "confirm", "validate", "report", "data inspect"}
    for path, sub, _ in commands:
        section = page.split(f"## fer-study {path}\n", 1)[1].split("\n## ", 1)[0]
        entry = readme.split(f"fer-study {path} ", 1)[1].split("\nfer-study ", 1)[0]
        for action in gen._options(sub):
            for opt in action.option_strings:
                assert f"`{opt}`" in section, (path, opt)
            assert gen._usage(action) in entry, (path, gen._usage(action))


def test_an_undocumented_option_key_or_variable_stops_the_generator(monkeypatch):
    gen = _gen_docs()
    parser = argparse.ArgumentParser(prog="fer-study")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("x", help="x").add_argument("--new-option")
    with pytest.raises(gen.StaleDocs, match="--new-option"):
        gen.cli_page(parser)
    monkeypatch.delitem(gen.CONFIG_MEANINGS, "focal_gamma")
    with pytest.raises(gen.StaleDocs, match="focal_gamma"):
        gen.config_page()
    monkeypatch.delitem(gen.ENVIRONMENT, "FER_STUDY_DIR")
    with pytest.raises(gen.StaleDocs, match="FER_STUDY_DIR"):
        gen.environment_page()


def test_the_environment_scan_finds_what_the_code_reads():
    """The scan that guards the environment page sees the variables the package reads with os.environ."""
    names = _gen_docs().scanned_environment()
    assert {"FER_STUDY_PROFILE", "FER_STUDY_DIR", "FER_SPACE_DIR", "FER_STUDY_STORAGE", "RAY_ADDRESS",
            "FER_STUDY_CACHE", "FER_STUDY_RUNS", "FER_STUDY_ARTIFACTS", "HF_HUB_OFFLINE"} <= names


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("material", reason="mkdocs-material is in the test extra: scripts/test installs it")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                       "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").exists()


def _github_anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_benchmark_results_open_with_a_summary_of_every_question():
    """benchmarks/RESULTS.md: a summary table first whose rows link every question's section (and only
    existing ones), each row with a date or an explicit 'not yet run', a command; no work-history words;
    every local link and image resolving."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    questions = [ln[3:] for ln in text.splitlines() if ln.startswith("## ")]
    assert questions[0] == "Summary"
    summary = text.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in summary.splitlines() if ln.startswith("| [")]
    linked = [re.search(r"\]\(#([^)]+)\)", r).group(1) for r in rows]
    anchors = {_github_anchor(q) for q in questions[1:]}
    assert set(linked) <= anchors, set(linked) - anchors
    assert len(anchors - set(linked)) <= 2, anchors - set(linked)  # at most the screenshots and one more
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"20\d\d-\d\d-\d\d", cells[2]) or "not yet run" in cells[1], row
        assert cells[4].startswith("`"), row
    assert not re.findall(r"\(issue \d|\bsessions?\b|\bagents?\b", text, flags=re.I)
    for target in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (path.parent / target).exists(), target
