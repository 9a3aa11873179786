"""Claims and driver liveness on a bare Optuna study: no Ray, no trainable, no launch."""

from __future__ import annotations

import subprocess
import sys

import optuna
from optuna.trial import TrialState

from fer_core.study.claims import DRIVER_ATTR, Claims, reconcile
from fer_core.study.spec import load_study


def test_claims_need_no_ray():
    code = "import sys, fer_core.study.claims; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_two_drivers_take_each_planned_cell_once_and_the_dead_ones_trials_are_reconciled(tmp_path):
    spec = load_study("smoke", "smoke")
    study = optuna.create_study(study_name=spec.name, storage=f"sqlite:///{tmp_path / 'c.db'}",
                                direction=spec.direction)
    alive, gone = "this-host:1:0", "another-host:4242:0"  # not this host: judged by the heartbeat alone
    study.set_user_attr(DRIVER_ATTR + alive, 4e9)  # far in the future: seen just now
    study.set_user_attr(DRIVER_ATTR + gone, 1000.0)  # silent for decades
    drivers = [Claims(study, spec, spec.cells(), alive), Claims(study, spec, spec.cells(), gone)]
    taken: list[str] = []
    while True:
        got = [d.claim_cell() for d in drivers]  # the drivers take turns
        taken += [claim[1].cell_id for claim in got if claim is not None]
        if all(claim is None for claim in got):
            break
    assert sorted(taken) == sorted(c.cell_id for c in spec.cells())  # each cell once, none left
    trials = study.get_trials()
    assert all(t.state == TrialState.RUNNING and t.user_attrs["driver"] in (alive, gone) for t in trials)

    failed = reconcile(study)
    by_driver = {t.number: t.user_attrs["driver"] for t in trials}
    assert failed and sorted(failed) == sorted(n for n, d in by_driver.items() if d == gone)
    states = {t.number: t.state for t in study.get_trials()}
    assert all(states[n] == (TrialState.FAIL if d == gone else TrialState.RUNNING) for n, d in by_driver.items())
