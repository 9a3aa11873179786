"""README's first command, this checkout against a baseline commit, back to back on one machine.

Both sides run ``fer-study launch imbalance-ablation`` on the embedded defaults (local Ray, SQLite,
the profile chosen for the machine) as a fresh machine would: each with its own empty cache (the
stand-in rendered, ``amp: auto`` measured where it exists), its own storage, in its own process. The
baseline runs from a detached git worktree of ``--baseline`` on this venv. Variants added since the
baseline are dropped on this side (a three-line study file with ``drop_variants``), so both sides run
the same trials and the ratio is the speed of the same work. Then each side's report, and whether
each variant's held-out Δ lies inside the other side's interval (agreement within seed noise).

    python benchmarks/first_command.py                       # baseline 23b3646 (issue 21's "today's main")
    python benchmarks/first_command.py --profile smoke       # seconds: a check that the script works

Run it on a quiet machine: the ratio is only meaningful side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = "imbalance-ablation"


def variants(tree: Path) -> list[str]:
    doc = yaml.safe_load((tree / "studies" / f"{STUDY}.yaml").read_text())
    return list(doc["design"]["variants"])


def side(name: str, tree: Path, study: str, work: Path, profile: str | None) -> tuple[float, pd.DataFrame]:
    """Launch (timed, as one fresh process) and report one side; (seconds, the report's table)."""
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "FER_STUDY_CACHE": str(work / "cache")}
    env.pop("FER_STUDY_STORAGE", None)
    env.pop("FER_STUDY_AMP_AUTO", None)  # each side decides its precision as a user's machine would
    cli = [sys.executable, "-m", "fer_core.cli"]
    launch = [*cli, "launch", study, *(["--profile", profile] if profile else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(launch, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: launch failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    print(f"{name}: {seconds:.0f} s", flush=True)
    rep = subprocess.run([*cli, "report", STUDY, "--format", "csv",
                          "--quiet", "--out", str(work / "report")], cwd=work, env=env, capture_output=True, text=True)
    if rep.returncode != 0:
        raise SystemExit(f"{name}: report failed:\n{rep.stderr[-3000:]}")
    return seconds, pd.read_csv(work / "report" / "report.csv")


def trained_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The trained variants' held-out Δ rows (not the baseline, not the post-hoc derived rows)."""
    rows = table[~table["baseline"].astype(bool)]
    if "derived" in rows:
        rows = rows[rows["derived"].fillna("").astype(str) == ""]
    return rows.set_index("variant")[["delta", "delta_ci_lo", "delta_ci_hi"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="23b3646", help="the commit to compare with (default: %(default)s)")
    ap.add_argument("--profile", default=None, help="a profile for both sides (default: chosen for the machine)")
    ap.add_argument("--first", choices=("baseline", "current"), default="baseline",
                    help="which side runs first (default: %(default)s)")
    ap.add_argument("--keep", default=None, help="keep the work directories here (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="first-command-")).resolve()
    base_tree = work / "baseline-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(base_tree), args.baseline],
                   check=True, capture_output=True)
    try:
        added = [v for v in variants(ROOT) if v not in variants(base_tree)]
        child = work / f"{STUDY}-same-trials.yaml"
        # the same name as the baseline's study, so both reports read alike; the file drops what is new
        child.write_text(f"name: {STUDY}\nextends: {ROOT / 'studies' / (STUDY + '.yaml')}\n"
                         + (f"drop_variants: [{', '.join(added)}]\n" if added else ""))
        print(f"baseline {args.baseline} vs this checkout, {STUDY}; dropped here (added since): "
              f"{', '.join(added) or 'none'}", flush=True)
        runs = [("baseline", base_tree, STUDY), ("current", ROOT, str(child))]
        if args.first == "current":
            runs.reverse()
        out = {name: side(name, tree, study, work / name, args.profile) for name, tree, study in runs}
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], capture_output=True)
    (t_old, old), (t_new, new) = out["baseline"], out["current"]
    print(f"\nwall time: baseline {t_old:.0f} s, current {t_new:.0f} s: {t_old / t_new:.2f}x faster")
    a, b = trained_rows(old), trained_rows(new)
    both = a.merge(b, left_index=True, right_index=True, suffixes=("_base", "_now"))
    inside = ((both["delta_now"].between(both["delta_ci_lo_base"], both["delta_ci_hi_base"]))
              & (both["delta_base"].between(both["delta_ci_lo_now"], both["delta_ci_hi_now"])))
    print(f"\n{'variant':32s} {'baseline Δ [95% CI]':>28s} {'current Δ [95% CI]':>28s}  each inside the other's")
    for v, r in both.iterrows():
        print(f"{v:32s} {r.delta_base:+.3f} [{r.delta_ci_lo_base:+.3f}, {r.delta_ci_hi_base:+.3f}]      "
              f"{r.delta_now:+.3f} [{r.delta_ci_lo_now:+.3f}, {r.delta_ci_hi_now:+.3f}]   {'yes' if inside[v] else 'NO'}")
    print(f"\n{int(inside.sum())} of {len(both)} variants agree within each other's intervals")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
