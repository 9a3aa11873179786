"""Read-only questions about a stored study: trials by state, the best trial, cells left.

Shared by the runner (progress, what is left to run) and the CLI (``status``, ``studies``),
so the CLI needs none of the runner's internals.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from fer_core.study.outputs import real_trials, top_trials
from fer_core.study.spec import Cell, StudySpec

STATES = ("COMPLETE", "RUNNING", "PRUNED", "FAIL", "WAITING")

__all__ = ["STATES", "best_value", "counts_by_state", "done_cells", "left_to_run", "real_trials", "top_trials"]


def counts_by_state(study: optuna.Study) -> dict[str, int]:
    """Trials this study ran, by state: warm-start copies are prior evidence, not progress."""
    out = dict.fromkeys(STATES, 0)
    for t in real_trials(study, states=None):  # derived copies (warm start) left out
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def best_value(study: optuna.Study) -> tuple[float | None, int | None]:
    """The best trial this study ran (``study.best_trial`` would also rank warm-start copies)."""
    best = top_trials(study, 1)
    return (best[0].value, best[0].number) if best else (None, None)


def done_cells(study: optuna.Study) -> set[str]:
    """Cells that are finished for good: COMPLETE, or PRUNED (a pruner's or scheduler's verdict, or
    skipped by pruning across folds). Re-running a pruned cell would train the same seed and config
    to the same verdict, and store a second trial for one cell. (A driver stopped mid-trial leaves
    its trial RUNNING, not PRUNED: reconcile fails it and the cell is re-queued.)"""
    return {t.user_attrs["cell_id"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                                      TrialState.PRUNED))
            if "cell_id" in t.user_attrs}


def left_to_run(spec: StudySpec, study: optuna.Study) -> tuple[list[Cell], int]:
    """The cells not yet COMPLETE, and how many trials (cells, or search slots) are left."""
    if spec.design == "search":
        c = counts_by_state(study)
        return [], max(0, (spec.trials or 0) - c["COMPLETE"] - c["PRUNED"])
    done = done_cells(study)
    todo = [c for c in spec.cells() if c.cell_id not in done]
    return todo, len(todo)
