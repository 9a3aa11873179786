"""The launch path end to end on real storage (SQLite and PostgreSQL) with a local Ray."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from fer_core.errors import ConfigError
from fer_core.study.runner import LaunchOptions, launch


def _trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_smoke_study_lands_in_storage_relaunch_continues_another_spec_is_refused(storage, study_env, ray_local):
    out = launch("smoke", LaunchOptions(storage=storage, profile="smoke", show_progress=False))
    assert out["COMPLETE"] == 3 and out["ran"] == 3
    study = optuna.load_study(study_name="smoke", storage=storage)
    assert study.user_attrs["class_names"][12] == "Happily fearful"
    assert study.user_attrs["class_counts"] == [394, 171, 109, 136, 71, 495, 120, 352, 24, 124, 582, 108, 6, 17]
    assert study.user_attrs["spec"]["profile"] == "smoke"
    trials = study.get_trials()
    assert sorted(t.user_attrs["cell_id"] for t in trials) == [
        "balanced_softmax/seed=0", "plain-ce/seed=0", "sampler_sqrt/seed=0"]
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == [0, 1]  # every epoch
        # the final value is the selected epoch's validation macro-F1
        assert t.value == pytest.approx(max(t.intermediate_values.values()))
        for key in ("ray_trial_id", "seed", "data_fingerprint", "code_version", "val_f1_per_class",
                    "test_macro_f1", "best_epoch", "test_metrics"):
            assert key in t.user_attrs, key
        assert len(t.user_attrs["val_f1_per_class"]) == 14
        # the params are the cell's (a sampler must not redraw a planned cell)
        variant = t.user_attrs["variant"]
        assert t.params["loss"] == ("balanced_softmax" if variant == "balanced_softmax" else "ce")
        assert t.params["sampler"] == ("sqrt" if variant == "sampler_sqrt" else "none")
    again = launch("smoke", LaunchOptions(storage=storage, profile="smoke", show_progress=False))
    assert again["ran"] == 0 and len(_trials(storage, "smoke")) == 3  # nothing re-run, nothing duplicated
    # a relaunch with another spec (another profile) is refused, and the stored study is unchanged
    before = [(t.number, t.state, t.value, t.user_attrs) for t in _trials(storage, "smoke")]
    with pytest.raises(ConfigError, match="different spec"):
        launch("smoke", LaunchOptions(storage=storage, profile="cpu", show_progress=False))
    assert [(t.number, t.state, t.value, t.user_attrs) for t in _trials(storage, "smoke")] == before
    assert optuna.load_study(study_name="smoke", storage=storage).user_attrs["spec"]["profile"] == "smoke"


HPO = """
name: prune-test
question: does pruning store PRUNED trials with their epochs?
data: {{dataset: synthetic}}
base: {{backbone: test_resnet, img_size: 48, epochs: 3, warmup_epochs: 0, batch_size: 32}}
seeds: [0]
design: {{kind: search, space: imbalance}}
optuna_sampler: {{name: random}}
{stopper}
budget: {{trials: 5, max_concurrent: 2}}
"""


@pytest.mark.parametrize(
    "stopper",
    [
        "pruner: {name: percentile, options: {percentile: 90.0, n_startup_trials: 1, n_warmup_steps: 0}}",
        "scheduler: {name: asha, options: {grace_period: 1, reduction_factor: 3}}",
    ],
    ids=["optuna-pruner", "ray-asha"],
)
def test_stopped_trials_are_pruned_with_all_their_epochs(stopper, study_env, ray_local):
    path = study_env / "prune.yaml"
    path.write_text(HPO.format(stopper=stopper))
    url = f"sqlite:///{study_env / 'p.db'}"
    launch(str(path), LaunchOptions(storage=url, profile="smoke", show_progress=False))
    trials = _trials(url, "prune-test")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) + len(pruned) == 5 and pruned, [t.state for t in trials]
    for t in pruned:
        steps = sorted(t.intermediate_values)
        assert steps == list(range(len(steps))) and 1 <= len(steps) <= 3  # contiguous epochs up to the stop
        assert "test_macro_f1" not in t.user_attrs  # never evaluated on test
    for t in complete:
        assert sorted(t.intermediate_values) == [0, 1, 2]
    # a pruned trial never becomes the best trial
    assert optuna.load_study(study_name="prune-test", storage=url).best_trial.state == TrialState.COMPLETE


def test_a_pruned_cell_is_final_a_failed_one_is_run_again(study_env):
    """A planned cell stopped by a pruner or scheduler is PRUNED for good: a relaunch (or a second
    driver) that trained it again would store a second trial for the cell and reach the same verdict."""
    from fer_core.study.queries import left_to_run
    from fer_core.study.spec import load_study

    spec = load_study("smoke", "smoke")
    study = optuna.create_study(direction="maximize")
    pruned, failed, *rest = spec.cells()
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={0: 0.1},
                                              user_attrs={"cell_id": pruned.cell_id}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"cell_id": failed.cell_id}))
    todo, n = left_to_run(spec, study)
    assert [c.cell_id for c in todo] == [failed.cell_id] + [c.cell_id for c in rest] and n == 1 + len(rest)


class _TuneTrial:
    def __init__(self, status: str) -> None:
        self.status = status


def test_running_counts_what_tune_runs_not_optunas_running_state(capsys):
    """Optuna holds a trial RUNNING from its claim until its tell lands: with 2 at once, 3 were RUNNING
    there (one claimed and waiting, one finished but not yet told). The count comes from Tune."""
    from fer_core.study.runner import Progress, live_counts

    study = optuna.create_study(direction="maximize")
    for _ in range(3):
        study.ask()  # RUNNING in Optuna
    tune = [_TuneTrial(s) for s in ("RUNNING", "RUNNING", "PENDING", "TERMINATED")]
    assert live_counts(t.status for t in tune) == {"running": 2, "waiting": 1}
    progress = Progress(study, total=4, metric="macro_f1")
    progress(tune, force=True)
    out = capsys.readouterr().out
    assert "running 2 waiting 1" in out and "running 3" not in out


def test_a_line_per_finished_trial_with_variant_seed_and_value(capsys):
    from fer_core.study.runner import Progress

    study = optuna.create_study(direction="maximize")
    old = study.ask()
    study.tell(old, 0.1)  # finished before this launch: not repeated
    progress = Progress(study, total=3, metric="macro_f1")
    t = study.ask({"seed": optuna.distributions.IntDistribution(0, 9)})
    t.set_user_attr("variant", "balanced_softmax")
    t.set_user_attr("seed", 2)
    study.tell(t, 0.08366067516415489)
    p = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    p.report(0.05, 0)
    study.tell(p, state=TrialState.PRUNED)
    f = study.ask()
    f.set_user_attr("variant", "focal")
    f.set_user_attr("error", "DataError: x.png: cannot decode\nTraceback ...")
    study.tell(f, state=TrialState.FAIL)
    progress([], force=True)
    progress([], force=True)  # nothing new: no line twice
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("trial ")]
    assert lines[0].startswith("trial 1 balanced_softmax seed 2: macro_f1 0.0837")
    assert lines[1].startswith("trial 2 lr=") and "pruned after epoch 0" in lines[1]
    assert lines[2].startswith("trial 3 focal seed ?: failed: DataError: x.png: cannot decode")
    assert len(lines) == 3
