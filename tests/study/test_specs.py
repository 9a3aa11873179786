"""Every study file and search space loads and resolves, for every profile, without training."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from fer_core.errors import ConfigError
from fer_core.study.space import parse_space
from fer_core.study.spec import load_study
from fer_core.study.studyfile import PROFILES, read_yaml

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted(p.stem for p in (ROOT / "studies").glob("*.yaml"))
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


def test_the_shipped_studies_exist():
    assert {"imbalance-ablation", "imbalance-hpo", "backbones", "smoke"} <= set(STUDIES)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", STUDIES)
def test_every_study_resolves_every_name(name, profile):
    spec = load_study(name, profile)  # resolves losses, samplers, backbones, Optuna components, every config
    assert spec.name == name and spec.profile == profile
    text = (ROOT / "studies" / f"{name}.yaml").read_text()
    assert text.startswith("# ") and f"fer-study launch {name}" in text  # header: purpose and launch command
    if spec.design != "search":
        cells = spec.cells()
        assert len(cells) == len({c.cell_id for c in cells}) == spec.n_planned() > 0


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_every_search_space_samples_valid_configs(path):
    space = parse_space(read_yaml(path), str(path))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    from fer_core.config import resolve_config

    for _ in range(20):
        trial = study.ask()
        params = space.sample(trial)
        resolve_config(params)
        study.tell(trial, 0.0)
        for p in space.params:  # conditionals: a parameter is present exactly when its condition holds
            assert (p.name in params) == p.active(params)
        assert space.complete(study.trials[-1].params) == params  # a stored trial's Optuna params give it back


def test_complete_adds_the_fixed_values_active_for_the_stored_params():
    space = parse_space({"loss": {"type": "categorical", "choices": ["ce", "focal"]},
                         "allow_double_weighting": {"type": "fixed", "value": True},
                         "focal_gamma": {"type": "fixed", "value": 3.0, "when": {"loss": ["focal"]}}}, "s.yaml")
    assert space.complete({"loss": "focal"}) == {"loss": "focal", "allow_double_weighting": True, "focal_gamma": 3.0}
    assert space.complete({"loss": "ce"}) == {"loss": "ce", "allow_double_weighting": True}
    assert space.complete({"loss": "ce", "allow_double_weighting": False}) == {"loss": "ce", "allow_double_weighting": False}


def test_ablation_design_is_one_at_a_time_from_plain_ce():
    spec = load_study("imbalance-ablation", "gpu")  # the whole design (the cpu profile runs a part of it)
    cells = spec.cells()
    assert len(spec.seeds) == 5 and cells[0].variant == "plain-ce"
    base = {k: v for k, v in cells[0].params.items() if k != "seed"}
    assert base["loss"] == "ce" and base["sampler"] == "none"
    loss_params = {"class_weighting", "focal_gamma", "cb_beta", "label_smoothing"}  # read only by their loss
    for c in cells:
        diff = {k for k, v in c.params.items() if k != "seed" and v != base[k]} - loss_params
        if "+" in c.variant:  # named combinations change two knobs on purpose
            assert len(diff) == 3 and "allow_double_weighting" in diff, c.variant
        elif c.variant in BUNDLES:  # one published method whose parts only make sense together
            assert diff == BUNDLES[c.variant], c.variant
        else:
            assert len(diff) <= 1, (c.variant, diff)  # one fix at a time
    # every toolkit knob is ablated
    varied = {k for v in spec.variants.values() for k in v}
    assert {"loss", "sampler", "aug_strength", "minority_boost", "mixup_alpha", "cutmix_alpha", "au_weight"} <= varied
    # and the long-tail literature's cheap baselines are rows (post-hoc ones are derived by the report)
    assert {"ldam_drw_cosine", "drs", "crt", "lws"} <= set(spec.variants)


# LDAM-DRW as published needs its cosine head; deferred re-sampling a start and a sampler; LWS the
# stage-2 lr its scales move at; the AU attention head the AU loss
BUNDLES = {"ldam_drw_cosine": {"loss", "head"}, "drs": {"defer_start", "defer_sampler"}, "lws": {"stage2", "stage2_lr"},
           "au_attention": {"au_weight", "head"}}  # the AU-guided head needs the AU loss that guides it


def test_a_child_study_drops_parent_variants_by_name_and_refuses_unknown_ones(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"name: child\nextends: {ROOT / 'studies' / 'imbalance-ablation.yaml'}\n"
                     "drop_variants: [au_multitask, mixup]\n")
    parent, spec = load_study("imbalance-ablation", "cpu"), load_study(str(child), "cpu")
    assert list(spec.variants) == [v for v in parent.variants if v not in ("au_multitask", "mixup")]
    child.write_text(child.read_text().replace("mixup]", "mixupp]"))
    with pytest.raises(ConfigError) as exc:
        load_study(str(child), "cpu")
    assert "drop_variants: unknown variant 'mixupp'; valid: weighted_ce" in str(exc.value)
    assert str(child) in str(exc.value) and "\n" not in str(exc.value)


def test_a_child_design_without_a_kind_patches_the_parents_and_one_with_a_kind_replaces_it(tmp_path):
    """design: {sequential: ...} in a child keeps the parent's rows (and its profile's drop_variants)."""
    child = tmp_path / "child.yaml"
    child.write_text(f"name: child\nextends: {ROOT / 'studies' / 'imbalance-ablation.yaml'}\nseeds: [0, 1, 2, 3]\n"
                     "design: {sequential: {looks: [2, 4], min_effect: 0.05}}\n")
    parent, spec = load_study("imbalance-ablation", "cpu"), load_study(str(child), "cpu")
    assert list(spec.variants) == list(parent.variants) and spec.sequential.looks == (2, 4)
    child.write_text(child.read_text().replace("design: {", "design: {kind: one_at_a_time, variants: {f: {loss: focal}}, "))
    spec = load_study(str(child), "cpu")
    assert list(spec.variants) == ["f"] and spec.sequential.looks == (2, 4)


def test_profiles_size_the_same_study(monkeypatch):
    smoke, cpu, gpu = (load_study("imbalance-ablation", p) for p in PROFILES)
    assert smoke.base["backbone"] == "test_resnet" and smoke.n_planned() < cpu.n_planned()
    assert gpu.base["img_size"] == 224 and gpu.resources["gpu"] == "auto"  # GPU share measured per backbone
    monkeypatch.setenv("FER_STUDY_PROFILE", "smoke")
    assert load_study("imbalance-ablation").profile == "smoke"


def _write(tmp_path, text: str) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


GOOD = """
name: t
question: q?
design: {kind: one_at_a_time, variants: {focal: {loss: focal}}}
"""


SEQ = "design: {kind: one_at_a_time, variants: {focal: {loss: focal}}, sequential: "


def test_a_sequential_design_plans_its_looks_on_the_first_seeds_and_validate_prints_the_trainings(tmp_path):
    from fer_core.cli import plan_lines

    spec = load_study(_write(tmp_path, GOOD.replace("design: {", "seeds: [5, 6, 7, 8]\ndesign: {sequential: "
                                                    "{looks: [2, 4], min_effect: 0.05}, ")), "cpu")
    assert spec.sequential.looks == (2, 4) and spec.sequential.futility_power == 0.2
    assert spec.sequential.min_effect == 0.05
    text = "\n".join(plan_lines(spec))
    assert "looks at 2 seeds [5, 6], 4" in text
    m = re.search(r"at most (\d+) .*expected ~(\d+) with no effect in any row, ~(\d+) with", text)
    assert m, text
    most, none, every = map(int, m.groups())
    assert most == 2 * 4  # baseline and one variant at every seed
    assert 2 * 2 <= min(none, every) and max(none, every) <= most  # look 1's cells at least, the fixed design at most


def test_checkpoints_are_time_bounded_except_under_hyperband(tmp_path):
    assert load_study(_write(tmp_path, GOOD)).checkpoint_min_s == 30.0
    assert load_study(_write(tmp_path, GOOD + "checkpoint_min_s: 5\n")).checkpoint_min_s == 5.0
    # Ray's HyperBand pauses trials and resumes them from their latest checkpoint: one per epoch
    assert load_study(_write(tmp_path, GOOD + "checkpoint_min_s: 5\nscheduler: hyperband\n")).checkpoint_min_s == 0.0
    assert load_study(_write(tmp_path, GOOD + "scheduler: {name: hyperband}\n")).checkpoint_min_s == 0.0
    assert load_study(_write(tmp_path, GOOD + "scheduler: asha\n")).checkpoint_min_s == 30.0


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ("name: 'x; DROP TABLE trials'", "name must match"),
        ("name: '$(rm -rf ~)'", "name must match"),
        ("question: ''", "question"),
        ("design: {kind: bayes}", "design.kind 'bayes'; allowed: grid, one_at_a_time, search"),
        ("design: {kind: one_at_a_time, variants: {x: {lossy: ce}}}", "unknown config key 'lossy'"),
        ("design: {kind: one_at_a_time, variants: {x: {loss: hinge}}}", "loss: unknown loss 'hinge'"),
        ("design: {kind: grid, factors: {backbone: []}}", "design.factors.backbone"),
        ("design: {kind: search, space: nonexistent}", "unknown search space 'nonexistent'"),
        ("optuna_sampler: annealing", "optuna_sampler: unknown Optuna sampler 'annealing'"),
        ("pruner: {name: median}\nscheduler: asha", "pick one of pruner"),
        ("seeds: [0, 0]", "seeds repeat"),
        ("objective: {metric: loss}", "objective.metric"),
        ("budget: {trials: 0}", "budget.trials"),
        ("colour: red", "unknown study key 'colour'"),
        ("profiles: {huge: {}}", "unknown profile 'huge'"),
        ("design: {kind: one_at_a_time, variants: {x: {loss: weighted_ce, sampler: weighted}}}",
         "allow_double_weighting"),
        (SEQ + "{looks: [3, 2], min_effect: 0.02}}", "design.sequential.looks must be a list of at least two increasing"),
        (SEQ + "{looks: [1, 3], min_effect: 0.02}}", "the first >= 2"),
        (SEQ + "{looks: [2, 3], min_effect: 0}}", "design.sequential.min_effect must be a number in (0, 1)"),
        (SEQ + "{looks: [2, 3], min_effect: 0.1, futility_power: 1.5}}", "design.sequential.futility_power"),
        (SEQ + "{looks: [2, 3], min_effect: 0.1, spending: pocock}}", "design.sequential: unknown key 'spending'"),
        (SEQ + "{looks: [2, 3]}}", "design.sequential.min_effect must be a number"),
        (SEQ + "{}}", "design.sequential: a mapping {looks"),
        (SEQ + "{looks: [2, 3], min_effect: 0.1}}\nseeds: [0, 1, 2, 3]",
         "design.sequential.looks: the last look (3 seeds) must be every seed of the study (4 in seeds)"),
        ("design: {kind: search, space: imbalance-hpo, sequential: {looks: [2, 3], min_effect: 0.1}}",
         "design.sequential: only a grid or one_at_a_time design"),
    ],
)
def test_bad_study_files_fail_with_one_line_naming_the_file(tmp_path, patch, needle):
    import yaml

    spec = {**yaml.safe_load(GOOD), **yaml.safe_load(patch)}
    path = _write(tmp_path, yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as exc:
        load_study(path, "cpu")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"lr": {"type": "float", "low": 0.1, "high": 0.1}}, "empty range"),
        ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
        ({"loss": {"type": "categorical", "choices": []}}, "choices must be a non-empty list"),
        ({"focal_gamma": {"type": "float", "low": 1, "high": 2, "when": {"loss": "focal"}}}, "'when' refers to"),
        ({"lr": {"type": "uniform", "low": 1, "high": 2}}, "unknown type 'uniform'"),
        ({"learning_rate": {"type": "float", "low": 1, "high": 2}}, "unknown config key 'learning_rate'"),
        ({}, "non-empty mapping"),
    ],
)
def test_bad_search_spaces(space, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_space(space, "space.yaml")


def test_a_launch_validates_each_planned_config_once(monkeypatch):
    """load_study and the launch's checks (data, heads, weights, the scheduler's max_t) share one
    validation per planned config; a pickled copy (Tune saves the searcher's state) carries none."""
    import pickle

    import fer_core.study.spec as spec_mod
    from fer_core.study.runner import max_epochs

    calls = []
    real = spec_mod.resolve_config
    monkeypatch.setattr(spec_mod, "resolve_config", lambda cfg, **kw: calls.append(cfg) or real(cfg, **kw))
    spec = load_study("imbalance-ablation", "smoke")
    spec_mod.check_data(spec)
    spec_mod.check_heads(spec)
    spec_mod.check_weights_here(spec)
    assert max_epochs(spec) == 2 + 1  # smoke: 2 epochs of stage 1, then crt's / lws's 1 of stage 2
    assert len(calls) == len(spec.planned) == spec.n_planned()
    copy = pickle.loads(pickle.dumps(spec))
    assert "planned" not in copy.__dict__ and copy == spec and copy.planned == spec.planned


def test_a_profile_runs_a_smaller_design_and_a_new_design_leaves_its_drop_behind(tmp_path):
    """imbalance-ablation's cpu profile drops rows (profiles.cpu.drop_variants: what 2 CPU cores train to
    their plateau in the main job's time); the gpu profile runs every row; a child with its own design
    does not inherit the drop, and a bad name in a profile's drop is one line naming it."""
    cpu, gpu = load_study("imbalance-ablation", "cpu"), load_study("imbalance-ablation", "gpu")
    assert set(cpu.variants) < set(gpu.variants) and len(gpu.variants) == 23
    assert load_study("smoke", "cpu").variants.keys() == {"balanced_softmax", "sampler_sqrt"}
    child = tmp_path / "child.yaml"
    child.write_text(f"name: child\nextends: {ROOT / 'studies' / 'imbalance-ablation.yaml'}\n"
                     "profiles: {cpu: {drop_variants: [mixupp]}}\n")
    with pytest.raises(ConfigError) as exc:
        load_study(str(child), "cpu")
    assert "profiles.cpu.drop_variants: unknown variant 'mixupp'; valid:" in str(exc.value)
    assert "\n" not in str(exc.value)
    child.write_text(f"name: child\nextends: {ROOT / 'studies' / 'imbalance-ablation.yaml'}\n"
                     "profiles: {cpu: {drop_variants: []}}\n")  # a child keeps every row
    assert load_study(str(child), "cpu").variants.keys() == gpu.variants.keys()


def test_validate_warns_when_a_measured_schedule_stops_short_of_the_plateau():
    from fer_core.study.plateau import short_of_plateau

    recipe = {"dataset": "synthetic", "backbone": "test_resnet", "img_size": 48, "lr": 0.002, "batch_size": 32,
              "pretrained": False}
    warning = short_of_plateau({**recipe, "epochs": 8})
    assert warning and warning.startswith("warning: 8 epochs is short of the baseline's plateau")
    assert short_of_plateau({**recipe, "epochs": 8, "img_size": 64}) is None  # no measurement of that recipe
    assert short_of_plateau({**recipe, "epochs": 200}) is None  # longer than any still-rising measurement
