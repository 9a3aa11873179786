"""`fer-study confirm`: a search's top configs by validation, re-trained on fresh seeds as a new
one-at-a-time study judged on the held-out split."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from fer_core.errors import ConfigError, FerError
from fer_core.study.confirm import confirm_spec, write_confirm_study
from fer_core.study.spec import load_study


def _stored_search(tmp_path) -> optuna.Study:
    """A stored search study with four complete trials (no training: only what confirm reads)."""
    spec = load_study("imbalance-hpo", "smoke")
    study = optuna.create_study(study_name="hpo-x", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    study.set_user_attr("spec", spec.resolved)
    dists = {"loss": CategoricalDistribution(["ce", "balanced_softmax", "focal"]),
             "aug_strength": FloatDistribution(0.0, 1.0), "seed": CategoricalDistribution([0, 3])}
    for loss, aug, seed, value in (("ce", 0.1, 0, 0.30), ("balanced_softmax", 0.4, 0, 0.52),
                                   ("focal", 0.2, 3, 0.41), ("balanced_softmax", 0.9, 0, 0.47)):
        study.add_trial(optuna.trial.create_trial(params={"loss": loss, "aug_strength": aug, "seed": seed},
                                                  distributions=dists, value=value))
    return study


def test_confirm_takes_the_top_configs_by_validation_on_fresh_seeds(tmp_path):
    study = _stored_search(tmp_path)
    data = confirm_spec(study, top=2, seeds=3)
    assert data["name"] == "hpo-x-confirm" and data["design"]["kind"] == "one_at_a_time"
    assert data["design"]["baseline"] == "base-config"
    # best validation values first (0.52, then 0.47); the seed is not part of a config
    assert list(data["design"]["variants"].values()) == [{"aug_strength": 0.4, "loss": "balanced_softmax"},
                                                         {"aug_strength": 0.9, "loss": "balanced_softmax"}]
    assert list(data["design"]["variants"]) == ["top1-trial1", "top2-trial3"]
    assert data["seeds"] == [1, 2, 4]  # none the search used (0 and 3)
    path = write_confirm_study(study, 2, 3, tmp_path / "confirm")
    text = path.read_text()
    assert text.startswith("# hpo-x-confirm") and f"fer-study launch {path}" in text
    spec = load_study(str(path), "smoke")  # a valid study file: every name and config resolves
    assert len(spec.cells()) == 3 * 3 and spec.base["epochs"] == load_study("imbalance-hpo", "smoke").base["epochs"]
    assert yaml.safe_load(text)["seeds"] == [1, 2, 4]


def test_a_search_spaces_fixed_values_go_with_the_confirmed_config(tmp_path):
    """imbalance-hpo's space fixes allow_double_weighting: true (not an Optuna param): a top trial that
    combines a re-weighting loss with a re-balancing sampler must keep it, or its config is refused."""
    spec = load_study("imbalance-hpo", "smoke")
    study = optuna.create_study(study_name="hpo-y", storage=f"sqlite:///{tmp_path / 'y.db'}", direction="maximize")
    study.set_user_attr("spec", spec.resolved)
    dists = {"loss": CategoricalDistribution(["ce", "ldam_drw"]), "sampler": CategoricalDistribution(["none", "sqrt"]),
             "seed": CategoricalDistribution([0])}
    for loss, sampler, value in (("ldam_drw", "sqrt", 0.5), ("ce", "none", 0.3)):
        params = {"loss": loss, "sampler": sampler, "seed": 0}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, value=value,
            # cv_folds / select_metric come from other sections (cv, objective): not part of the config's diff
            user_attrs={"config": spec.trial_config({**params, "allow_double_weighting": True, "cv_folds": 5,
                                                     "select_metric": "tail_f1"})}))
    data = confirm_spec(study, top=1, seeds=2)
    assert list(data["design"]["variants"].values()) == [
        {"allow_double_weighting": True, "loss": "ldam_drw", "sampler": "sqrt"}]  # the base's keys are not repeated
    load_study(str(write_confirm_study(study, 1, 2, tmp_path / "confirm")), "smoke")  # resolves: not refused


def test_confirm_refuses_bad_counts_and_an_empty_study(tmp_path):
    study = _stored_search(tmp_path)
    with pytest.raises(ConfigError, match="--top"):
        confirm_spec(study, top=0, seeds=3)
    with pytest.raises(ConfigError, match="--seeds"):
        confirm_spec(study, top=1, seeds=1)
    empty = optuna.create_study(study_name="e", storage=f"sqlite:///{tmp_path / 'e.db'}")
    empty.set_user_attr("spec", study.user_attrs["spec"])
    with pytest.raises(FerError, match="no complete trial"):
        confirm_spec(empty, top=1, seeds=2)


def test_confirm_hands_its_launch_options_to_the_launch(tmp_path, monkeypatch, capsys):
    """confirm launches like launch does: --address, --max-concurrent, --data and --set reach the launch
    (before, it had none of them and fell back to $RAY_ADDRESS silently)."""
    from fer_core import cli

    _stored_search(tmp_path)
    data = tmp_path / "faces"
    data.mkdir()
    seen = []
    monkeypatch.setattr(cli, "cmd_launch", lambda args: seen.append(args) or 0)
    rc = cli.main(["confirm", "hpo-x", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "c"),
                   "--top", "2", "--seeds", "2", "--address", "10.0.0.1:6379", "--max-concurrent", "3",
                   "--data", str(data), "--set", "epochs=3"])
    assert rc == 0 and len(seen) == 1
    args = seen[0]
    assert (args.address, args.max_concurrent, args.data, args.set) == ("10.0.0.1:6379", 3, str(data),
                                                                          [("epochs", 3)])
    assert args.study == str(tmp_path / "c" / "hpo-x-confirm.yaml") and args.profile == "smoke"


def test_confirm_with_a_key_the_launch_refuses_stops_with_one_line(tmp_path, capsys):
    """The real launch reads confirm's --set: an unknown trial-config key stops it before Ray starts."""
    from fer_core.cli import main

    _stored_search(tmp_path)
    rc = main(["confirm", "hpo-x", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "c"),
               "--top", "1", "--seeds", "2", "--set", "learning_rate=0.1"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "learning_rate" in err[0], err
    assert optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}") == ["hpo-x"]
