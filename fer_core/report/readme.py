"""Regenerate README.md's example report from a stored study (never hand-edit that block).

    python -m fer_core.report.readme [--study imbalance-ablation] [--storage URL] [--readme README.md]

Runs the same code as ``fer-study report STUDY --format md`` and replaces the text
between the two markers in README.md with its Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_core.errors import FerError

START = "<!-- example-report:start (python -m fer_core.report.readme; do not edit by hand) -->"
END = "<!-- example-report:end -->"


def splice(readme: str, body: str) -> str:
    if START not in readme or END not in readme:
        raise FerError(f"README has no example-report markers ({START!r} ... {END!r})")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body.rstrip()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    from fer_core.report.export import report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="imbalance-ablation")
    ap.add_argument("--storage")
    ap.add_argument("--readme", default=str(Path(__file__).resolve().parents[2] / "README.md"))
    ap.add_argument("--out", help="where the full report goes (default: reports/STUDY)")
    args = ap.parse_args(argv)
    try:
        out = report(args.study, storage=args.storage, formats=("md",), out=args.out)
        body = out["markdown"].replace(f"## {args.study}: ablation table", f"#### {args.study}: ablation table", 1)
        path = Path(args.readme)
        path.write_text(splice(path.read_text(), body))
    except FerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.readme}: example report regenerated from study {args.study} ({out['status']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
