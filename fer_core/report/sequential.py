"""A sequential study's rows judged from its stored trials (``design.sequential``; the procedure:
``fer_core/sequential.py``).

``judge_from`` is the report's own held-out test (``evidence.held_out_columns``) of each row on its first
n seeds, paired with the baseline's first seeds of that look; the launch gets it from the CLI
(``LaunchOptions.judge``, ``table.sequential_judge``: the study layer imports no report code) and plans the next look with it,
and the report replays the same looks to show, per row, the looks run, the seeds used, the stopping
reason and the level spent. The same stored trials give the same decisions in both.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from fer_core import sequential
from fer_core.report import evidence


def plan_of(spec: Mapping[str, Any]) -> sequential.Plan | None:
    """The stored spec's ``design.sequential`` as a plan (None: every row gets every seed)."""
    seq = (spec.get("design") or {}).get("sequential")
    if not seq:
        return None
    return sequential.Plan(tuple(int(n) for n in seq["looks"]), float(seq["min_effect"]),
                           float(seq.get("futility_power", sequential.FUTILITY_POWER)))


def judge_from(data: Any, plan: sequential.Plan, baseline: str, variants: list[evidence.Variant],
               labels: np.ndarray | None) -> sequential.Judge:
    """The judge over a report's held-out inputs (``table.held_out_inputs``); ``data``: its StudyData."""
    seeds = [str(s) for s in data.spec.get("seeds") or []]

    def _judge(look: int, row_seeds: Mapping[str, int]) -> dict[str, sequential.RowTest | None]:
        cut = []
        for v in variants:
            n = plan.looks[look] if v.name == baseline else row_seeds.get(v.name, 0)
            keep = set(seeds[:n])
            idx = [i for i, u in enumerate(v.units) if u in keep]
            preds = v.preds[idx] if v.preds is not None and idx else None
            cut.append(evidence.Variant(v.name, [v.units[i] for i in idx], preds))
        cols = evidence.held_out_columns(cut, labels, baseline, data.metric, data.class_names, data.groups,
                                         data.tail, data.settings)
        return {r: sequential.RowTest.from_row(cols.get(r) or {}) for r in row_seeds}

    return sequential.remembering(_judge)


def sequential_rows(data: Any, baseline: str, seen: list[str]) -> list[str]:
    """Every planned row but the baseline: the spec's variants (one at a time), the grid's combinations
    (a fractional grid: those with trials)."""
    design = data.spec.get("design") or {}
    if data.design == "one_at_a_time":
        return [str(v) for v in design.get("variants") or {}]
    factors = design.get("factors") or {}
    combos = [",".join(f"{k}={v}" for k, v in zip(factors, vals)) for vals in itertools.product(*factors.values())]
    return [c for c in combos if c != baseline and (not design.get("fraction") or c in seen)]


def state_from(data: Any, plan: sequential.Plan, baseline: str, variants: list[evidence.Variant],
               labels: np.ndarray | None) -> sequential.State:
    """The looks the stored trials complete, replayed: a look counts when every row open at it (and the
    baseline) has its seeds."""
    judge = judge_from(data, plan, baseline, variants, labels)
    rows = sequential_rows(data, baseline, [v.name for v in variants])
    seeds = [str(s) for s in data.spec.get("seeds") or []]
    have = {v.name: set(v.units) for v in variants if v.preds is not None}
    maximize = data.direction == "maximize"
    k, state = 0, sequential.replay(plan, rows, judge, 0, maximize)
    while not state.finished:
        need = state.next_seeds()
        if any(not set(seeds[:n]) <= have.get(baseline if r == "" else r, set()) for r, n in need.items()):
            break
        k += 1
        state = sequential.replay(plan, rows, judge, k, maximize)
    return state


def columns(state: sequential.State) -> dict[str, dict[str, Any]]:
    """Per row: looks run, seeds used, stopping reason, level spent (the table's sequential columns)."""
    out = {}
    for name, r in state.rows.items():
        out[name] = {"looks_run": r.looks_run, "seeds_used": r.seeds, "stop_reason": r.reason if r.looks_run else
                     "not run yet", "level_spent": r.spent, "sequential_status": r.status,
                     "decided_at_look": (r.decided_at + 1) if r.decided_at is not None else np.nan}
    return out


def header(state: sequential.State) -> str:
    """The header line: trainings used against the fixed design at the maximum seeds."""
    plan = state.plan
    done = f"{state.looks_done} of {len(plan.looks)} looks" + (", finished" if state.finished else
                                                                f", next: {plan.looks[state.looks_done]} seeds")
    counts: dict[str, int] = {}
    for r in state.rows.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    words = {"open": "open", "better": "better", "worse": "worse", "futility": "futile (conditional power)",
             "within": "futile (interval inside ±min_effect)", "max_seeds": "undecided at the maximum seeds"}
    told = ", ".join(f"{n} {words[s]}" for s, n in counts.items())
    return (f"Sequential design (looks {list(plan.looks)}, min_effect {plan.min_effect:g}): {done}; "
            f"{state.trainings()} trainings against {state.fixed_trainings()} for the fixed design at "
            f"{plan.max_seeds} seeds; rows: {told}. Alpha spending (Lan-DeMets, O'Brien-Fleming) with Holm "
            "across the rows on the spent level, futility non-binding (fer_core/sequential.py); the verdicts are "
            "this procedure's, the p (Holm) column the fixed design's test on the seeds each row has")


def verdict(row: Mapping[str, Any], maximize: bool) -> str | None:
    """The row's verdict from the sequential procedure (None: not a sequential row)."""
    status = row.get("sequential_status")
    if not isinstance(status, str):
        return None
    where = f"look {int(row['looks_run'])}, {int(row['seeds_used'])} seeds; level spent {row['level_spent']:.2g}"
    if status in ("better", "worse"):
        return f"{status} than the baseline (sequential: crossed its boundary at look {int(row['decided_at_look'])}; " \
               f"{where})"
    if status == "open":
        return f"open: the next look decides (so far {where})"
    return f"no detectable difference ({row['stop_reason']}; {where})"
