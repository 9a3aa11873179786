"""Regenerate the example report from a stored study (never hand-edit those blocks).

    python -m fer_core.report.readme [--study imbalance-ablation-digits] [--storage URL]

Runs the same code as ``fer-study report STUDY --format md`` and writes three things: the whole
Markdown between the markers of ``docs/guide/example-report.md``, a trimmed table of it (about ten
rows, the columns a reader needs first) between the markers of ``README.md``, and the report's forest
plot as ``docs/img/example-forest.png``, which both show.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from fer_core.errors import FerError

ROOT = Path(__file__).resolve().parents[2]
START = "<!-- example-report:start (python -m fer_core.report.readme; do not edit by hand) -->"
END = "<!-- example-report:end -->"
PAGE = ROOT / "docs" / "guide" / "example-report.md"
README = ROOT / "README.md"
FOREST = ROOT / "docs" / "img" / "example-forest.png"
# the README's trimmed table: these columns of the main table, at most TRIM_ROWS rows
TRIM_COLUMNS = ("variant", "n", "Δ test macro_f1 [95% CI]", "p (Holm)", "MDE 80%", "Δ few-shot F1 [95% CI]",
                "verdict")
TRIM_ROWS = 10


def splice(text: str, body: str, where: str = "README") -> str:
    if START not in text or END not in text:
        raise FerError(f"{where} has no example-report markers ({START!r} ... {END!r})")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body.rstrip()}\n{END}{tail}"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def main_table(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the report's first (ablation) table."""
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| variant"))
    header = _cells(lines[start])
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(_cells(ln))
    return header, rows


def trim(markdown: str, n_rows: int = TRIM_ROWS) -> str:
    """About ten rows of the ablation table for the README: the baseline, the rows with a verdict
    (better/worse), the ★ row, then the others in table order; derived (post-hoc, ensemble) rows left
    out; verdicts cut to their first clause."""
    header, rows = main_table(markdown)
    col = {name: header.index(name) for name in TRIM_COLUMNS}
    trained = [r for r in rows if not r[col["verdict"]].startswith("derived")]
    baseline = [r for r in trained if r[col["verdict"]] == "baseline"]
    decided = [r for r in trained if r[col["verdict"]].startswith(("better", "worse"))]
    starred = [r for r in trained if r[col["variant"]].startswith("★")]
    chosen: list[list[str]] = []
    for r in [*baseline, *decided, *starred, *trained]:
        if r not in chosen and len(chosen) < n_rows:
            chosen.append(r)
    chosen.sort(key=trained.index)  # table order, baseline first
    out = ["| " + " | ".join(TRIM_COLUMNS) + " |", "|" + "---|" * len(TRIM_COLUMNS)]
    for r in chosen:
        cells = [r[col[name]] for name in TRIM_COLUMNS]
        cells[-1] = cells[-1].split(" (", 1)[0]
        out.append("| " + " | ".join(cells) + " |")
    left = len(trained) - len(chosen)
    return "\n".join(out) + (f"\n\n{len(chosen)} of {len(trained)} trained rows; {left} more, the derived rows, "
                             "class groups and per-class tables in the full example." if left else "")


def main(argv: list[str] | None = None) -> int:
    from fer_core.report.export import report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="imbalance-ablation-digits")
    ap.add_argument("--storage")
    ap.add_argument("--page", default=str(PAGE), help="the docs page that shows the whole report")
    ap.add_argument("--readme", default=str(README), help="the README that shows the trimmed table")
    ap.add_argument("--out", help="directory for the full report (default: reports/STUDY)")
    args = ap.parse_args(argv)
    try:
        out = report(args.study, storage=args.storage, formats=("md",), out=args.out)
        body = out["markdown"].replace(f"## {args.study}: ablation table", f"### {args.study}: ablation table", 1)
        page, readme = Path(args.page), Path(args.readme)
        page.write_text(splice(page.read_text(), body, str(page)))
        readme.write_text(splice(readme.read_text(), trim(body), str(readme)))
        forest = next((Path(f) for f in out["files"] if Path(f).name == "delta_forest.png"), None)
        if forest is not None:
            shutil.copyfile(forest, FOREST)
    except FerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.page}, {args.readme}: example report regenerated from study {args.study} ({out['status']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
