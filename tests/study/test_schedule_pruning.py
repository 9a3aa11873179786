"""Pruning respects schedules: no pruner or Ray scheduler judges a trial on an epoch before its last
schedule switch (DRW start, deferred sampler/weights, stage 2) has had an epoch to act."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from fer_core.stages import SETTLED_KEY
from fer_core.study.bridge import OptunaPrunerScheduler
from fer_core.study.components import make_scheduler, schedule_unsettled


class FakeBridge:
    """Records what the scheduler asks; its pruner would stop every trial it is asked about."""

    def __init__(self) -> None:
        self.recorded: list[int] = []
        self.asked: list[int] = []

    def record(self, trial_id: str, result: dict) -> None:
        self.recorded.append(result["epoch"])

    def should_prune(self, trial_id: str) -> bool:
        self.asked.append(self.recorded[-1])
        return True


def test_schedule_unsettled():
    assert schedule_unsettled({"epoch": 4, SETTLED_KEY: 5})
    assert not schedule_unsettled({"epoch": 5, SETTLED_KEY: 5})
    assert not schedule_unsettled({"epoch": 0})  # a trial that reports no schedule (old code): as before


def test_the_optuna_pruner_is_asked_only_once_the_schedule_has_settled():
    bridge = FakeBridge()
    sched = OptunaPrunerScheduler(bridge)  # type: ignore[arg-type]
    trial = SimpleNamespace(trial_id="t")
    decisions = [sched.on_trial_result(None, trial, {"epoch": e, SETTLED_KEY: 3, "macro_f1": 0.1}) for e in range(5)]
    assert bridge.recorded == [0, 1, 2, 3, 4]  # every epoch is still an intermediate value (the curve)
    assert bridge.asked == [3, 4]
    assert decisions[:3] == [TrialScheduler.CONTINUE] * 3 and decisions[3] == TrialScheduler.STOP


@pytest.mark.parametrize("name", ["asha", "median", "hyperband"])
def test_ray_schedulers_do_not_see_results_before_the_schedule_settled(name, monkeypatch):
    sched = make_scheduler({"name": name, "options": {}}, "macro_f1", "max", 10)
    base = type(sched).__mro__[1]
    seen = []
    monkeypatch.setattr(base, "on_trial_result", lambda self, c, t, r: seen.append(r["epoch"]) or TrialScheduler.STOP)
    out = [sched.on_trial_result(None, None, {"epoch": e, SETTLED_KEY: 2}) for e in range(4)]
    assert out == [TrialScheduler.CONTINUE, TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.STOP]
    assert seen == [2, 3]
