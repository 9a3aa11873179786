"""A sequential design's next look (``design.sequential``): which cells the launch runs now.

The rows' states are replayed from the stored trials (``fer_core/sequential.replay``) with the
report's held-out test, which the launch gets as ``LaunchOptions.judge`` (the CLI passes
``report.table.sequential_judge``; the study layer imports no report code). Look k's cells are
the baseline's and every open row's first ``looks[k]`` seeds; a stopped row keeps the cells it
ran. Every driver derives the same plan from the same stored trials and claims cells as for a
fixed design (``claims``), so several drivers, a kill mid-look and a relaunch still run each cell
once, and a relaunch resumes the sequence at the look where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from fer_core import sequential
from fer_core.errors import ConfigError
from fer_core.study.queries import done_cells
from fer_core.study.spec import Cell, StudySpec

JudgeFn = Callable[[optuna.Study], sequential.Judge]  # the stored trials -> the report's test per row


def rows(spec: StudySpec) -> list[str]:
    """The rows a look judges: every planned variant but the baseline, in plan order."""
    base = spec.baseline_variant
    return [v for v in dict.fromkeys(c.variant for c in spec.cells()) if v != base]


def next_look(spec: StudySpec, study: optuna.Study, judge_fn: JudgeFn | None
              ) -> tuple[sequential.State, list[Cell]]:
    """The replayed state and the cells the next look still needs (not COMPLETE; empty: the
    sequence is over). Looks whose cells are all complete are judged; the first that is not is the
    one to run (or to finish: a relaunch after a kill mid-look)."""
    plan = spec.sequential
    if plan is None:
        raise ValueError("next_look: not a sequential design")
    if judge_fn is None:
        raise ConfigError(f"{spec.source}: design.sequential needs the report's judge to plan its looks; launch it "
                          "with fer-study launch (or pass LaunchOptions(judge=fer_core.report.table.sequential_judge))")
    judge = judge_fn(study)
    names = rows(spec)
    maximize = spec.direction == "maximize"
    done = done_cells(study)
    cells = spec.cells()
    base = spec.baseline_variant
    k = 0
    while True:
        state = sequential.replay(plan, names, judge, k, maximize)
        need = state.next_seeds()
        if not need:
            return state, []
        own = {r: n for r, n in need.items()}
        want = [c for c in cells if c.seed in spec.seeds[:own.get("" if c.variant == base else c.variant, 0)]]
        missing = [c for c in want if c.cell_id not in done]
        if missing:
            return state, missing
        k += 1


def trainings_line(state: sequential.State) -> str:
    """One progress line: the look reached and the trainings against the fixed design."""
    plan = state.plan
    open_rows = len(state.open)
    nxt = f"look {state.looks_done + 1} of {len(plan.looks)} ({plan.looks[state.looks_done]} seeds) for " \
          f"{open_rows} open row(s) and the baseline" if not state.finished else "every row decided or stopped"
    return (f"sequential: {state.looks_done} look(s) judged; {nxt}; {state.trainings()} trainings so far, at most "
            f"{state.fixed_trainings()} for the fixed design")


def summary(state: sequential.State) -> dict[str, Any]:
    return {"looks_done": state.looks_done, "trainings": state.trainings(),
            "fixed_trainings": state.fixed_trainings(),
            "rows": {n: r.status for n, r in state.rows.items()}}
