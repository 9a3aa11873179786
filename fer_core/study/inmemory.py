"""A throwaway in-memory Optuna study, made without Optuna's "A new study created in memory" INFO line.

For questions asked of a pruner or an importance evaluator over trials that are not (all) a stored
study's: fold pruning builds one per claim, the report one per search-study importance.
"""

from __future__ import annotations

from typing import Any

import optuna


def quiet_memory_study(**kwargs: Any) -> optuna.Study:
    """``optuna.create_study(**kwargs)`` in memory, Optuna's logging raised to WARNING meanwhile."""
    prev = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(**kwargs)
    finally:
        optuna.logging.set_verbosity(prev)
