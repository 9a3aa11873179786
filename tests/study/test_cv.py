"""k-fold CV as a study option: one trial per fold sharing a config_id; the report pairs by fold."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from helpers import fer_cli
from optuna.trial import TrialState
from PIL import Image
from sklearn.metrics import f1_score

from fer_core.data.dataset import TEST, VAL
from fer_core.errors import ConfigError
from fer_core.report.table import build_table, load_study_data, markdown
from fer_core.study.bridge import OptunaBridge
from fer_core.study.outputs import pack_classes
from fer_core.study.queries import done_cells
from fer_core.study.spec import load_study
from fer_core.train import train_fer

STUDY = """
# cv-test
name: cv-test
question: Does k-fold CV expand into one trial per fold?
data: {dataset: synthetic}
base: {backbone: test_resnet, img_size: 48, epochs: 1, warmup_epochs: 0, batch_size: 32}
seeds: [0]
cv: {folds: 3, group_by: "re:^(\\\\d{3})"}
design: {kind: one_at_a_time, baseline: plain-ce, variants: {bsm: {loss: balanced_softmax}}}
"""


def test_cv_spec_expands_every_config_into_folds_sharing_a_config_id(tmp_path):
    (tmp_path / "cv.yaml").write_text(STUDY)
    spec = load_study(str(tmp_path / "cv.yaml"), "smoke")
    cells = spec.cells()
    assert [c.cell_id for c in cells] == [f"{v}/seed=0/fold={f}" for v in ("plain-ce", "bsm") for f in range(3)]
    assert [c.meta["config_id"] for c in cells] == ["plain-ce/seed=0"] * 3 + ["bsm/seed=0"] * 3
    assert [c.params["cv_fold"] for c in cells] == [0, 1, 2, 0, 1, 2]
    cfg = spec.trial_config(cells[4].params)
    assert (cfg["cv_folds"], cfg["cv_fold"], cfg["cv_group_by"]) == (3, 1, r"re:^(\d{3})")
    assert spec.n_planned() == 6

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", direction="maximize")
    bridge = OptunaBridge(study, spec, cells, 0, lambda c: {}, "driver")
    config = bridge.suggest("ray-trial-1")
    assert config["train"]["cv_fold"] == 0 and config["out_dir"] is None
    attrs = study.trials[0].user_attrs
    assert (attrs["fold"], attrs["config_id"], attrs["cell_id"]) == (0, "plain-ce/seed=0", "plain-ce/seed=0/fold=0")


@pytest.mark.parametrize(("patch", "needle"), [
    ('cv: {folds: 1}', "cv.folds must be an integer in 2..50"),
    ('cv: {folds: 3, by: subject}', "cv: unknown key 'by'"),
    ('cv: {folds: 3, group_by: "re:(["}', "cv_group_by: invalid regex"),
])
def test_bad_cv_options_are_refused_before_any_trial(tmp_path, patch, needle):
    text = "\n".join(ln for ln in STUDY.splitlines() if not ln.startswith("cv:")) + "\n" + patch + "\n"
    (tmp_path / "cv.yaml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_study(str(tmp_path / "cv.yaml"), "smoke")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_cv_needs_a_design_with_planned_cells(tmp_path):
    text = STUDY.replace("design: {kind: one_at_a_time, baseline: plain-ce, variants: {bsm: {loss: balanced_softmax}}}",
                         "design: {kind: search, space: imbalance}\nbudget: {trials: 3}")
    (tmp_path / "cv.yaml").write_text(text)
    with pytest.raises(ConfigError, match="needs a grid or one_at_a_time design"):
        load_study(str(tmp_path / "cv.yaml"), "smoke")


def test_a_trial_validates_on_its_fold(small):
    result = train_fer({"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1,
                        "warmup_epochs": 0, "cv_folds": 3, "cv_fold": 2}, dataset=small)
    from fer_core.data.folds import fold_dataset

    ds = fold_dataset(small, 3, 2)
    assert sum(result["val"]["support"]) == int((ds.split == VAL).sum()) != int((small.split == VAL).sum())
    assert sum(result["test"]["support"]) == int((small.split == TEST).sum())  # the test split stays


def test_report_treats_folds_like_seeds_paired_by_fold(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}", direction="maximize")
    study.set_user_attr("class_names", ["a", "b"])
    study.set_user_attr("class_counts", [50, 5])
    values = {"plain-ce": [0.50, 0.40, 0.60], "bsm": [0.55, 0.48, 0.62]}
    labels = np.array([0] * 40 + [1] * 20)  # every fold's model predicts the same held-out test images
    wrong = {"plain-ce": [12, 14, 10], "bsm": [6, 8, 5]}  # images of class 1 called 0, per fold
    for variant, vals in values.items():
        for fold, v in enumerate(vals):
            t = study.ask()
            pred = labels.copy()
            pred[40:40 + wrong[variant][fold]] = 0
            for k, val in {"variant": variant, "seed": 0, "fold": fold, "config_id": f"{variant}/seed=0",
                           "val_metrics": {"macro_f1": v, "accuracy": v, "balanced_accuracy": v, "f1": [v, v],
                                           "tail_f1": v}, "test_metrics": {"macro_f1": v},
                           "predictions_packed": {"test": {"labels": pack_classes(labels),
                                                           "pred": pack_classes(pred)}}}.items():
                t.set_user_attr(k, val)
            study.tell(t, v)
    data = load_study_data(study)
    table = build_table(data).set_index("variant")
    row = table.loc["bsm"]
    assert row["n_seeds"] == 3 and row["seeds"] == "0/0,0/1,0/2"
    assert row["val_macro_f1_mean"] == pytest.approx(np.mean(values["bsm"]))  # a config's value: the fold mean
    assert row["val_delta"] == pytest.approx(np.mean(np.subtract(values["bsm"], values["plain-ce"])))

    def f1(w: int) -> float:
        pred = labels.copy()
        pred[40:40 + w] = 0
        return f1_score(labels, pred, average="macro")

    # held out: every fold's model on the same test images, paired by fold
    assert row["delta"] == pytest.approx(np.mean([f1(a) - f1(b) for a, b in zip(wrong["bsm"], wrong["plain-ce"])]))
    assert row["delta_ci_lo"] > 0  # every fold improves by a lot on the same images
    assert "k-fold cross-validation" in markdown(data, build_table(data))


# -- pruning across folds ------------------------------------------------------------------------

PRUNED_STUDY = """
name: cv-prune
question: Are the remaining folds of a config clearly worse than the best one skipped?
data: {dataset: synthetic}
base: {backbone: test_resnet, img_size: 48, epochs: 1, warmup_epochs: 0, batch_size: 32}
seeds: [0]
cv: {folds: 4, group_by: none, prune: {name: wilcoxon, options: {p_threshold: 0.3, n_startup_steps: 2}}}
design:
  kind: one_at_a_time
  baseline: plain-ce
  variants: {good: {loss: balanced_softmax}, same: {loss: focal}, bad: {loss: ldam_drw}}
"""


def _store_fold(study: optuna.Study, spec, cell, value: float) -> None:
    """A finished fold trial as the bridge stores it (cell attrs, the objective as its value)."""
    t = study.ask()
    for k, v in {"cell_id": cell.cell_id, "variant": cell.variant, "seed": cell.seed, **cell.meta}.items():
        t.set_user_attr(k, v)
    study.tell(t, value)


def test_a_config_worse_on_every_fold_has_its_remaining_folds_pruned_from_storage(tmp_path):
    (tmp_path / "p.yaml").write_text(PRUNED_STUDY)
    spec = load_study(str(tmp_path / "p.yaml"), "smoke")
    cells = spec.cells()
    # fold-major: fold 0 of every config first, so later folds are claimed once early ones are judged
    assert [c.meta["fold"] for c in cells] == [f for f in range(4) for _ in range(4)]
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="cv-prune", storage=url, direction="maximize")
    # folds 0 and 1 done: 'bad' is below the best on both, 'same' equals the best, the baseline is
    # below it too but is never pruned (every Δ pairs against it)
    folds = {"plain-ce": [0.50, 0.60], "good": [0.55, 0.65], "same": [0.55, 0.65], "bad": [0.30, 0.40]}
    for c in cells[:8]:
        _store_fold(study, spec, c, folds[c.variant][c.meta["fold"]])

    bridge = OptunaBridge(study, spec, cells[8:], 0, lambda c: {}, "driver-a")
    claimed = []
    while (config := bridge.suggest(f"ray-{len(claimed)}")) != "FINISHED":
        claimed.append(config["meta"]["cell_id"])
    assert claimed == [f"{v}/seed=0/fold={f}" for f in (2, 3) for v in ("plain-ce", "good", "same")]

    trials = optuna.load_study(study_name="cv-prune", storage=url).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert sorted(t.user_attrs["cell_id"] for t in pruned) == ["bad/seed=0/fold=2", "bad/seed=0/fold=3"]
    for t in pruned:
        assert t.user_attrs["pruned_by"] in ("wilcoxon across folds vs config good/seed=0",
                                             "wilcoxon across folds vs config same/seed=0")
        assert t.user_attrs["prune_p_value"] == pytest.approx(0.25)  # 2 folds, both worse: 2**-2
        assert t.user_attrs["pruned_after_folds"] == 2 and t.intermediate_values == {}
        assert t.params["loss"] == "ldam_drw" and t.params["cv_fold"] == t.user_attrs["fold"]
    # the skipped folds are done for good: a relaunch (or another driver) never claims them
    assert {"bad/seed=0/fold=2", "bad/seed=0/fold=3"} <= done_cells(study)
    again = OptunaBridge(study, spec, cells[8:], 0, lambda c: {}, "driver-b")
    assert again.suggest("ray-x") == "FINISHED"
    assert len(study.get_trials()) == len(trials)


def test_a_config_is_judged_only_once_enough_folds_are_stored(tmp_path):
    """One completed fold is no evidence (the test needs two pairs at least): nothing is pruned."""
    (tmp_path / "p.yaml").write_text(PRUNED_STUDY)
    spec = load_study(str(tmp_path / "p.yaml"), "smoke")
    cells = spec.cells()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    for c in cells[:4]:
        _store_fold(study, spec, c, {"bad": 0.1}.get(c.variant, 0.6))
    bridge = OptunaBridge(study, spec, cells[4:], 0, lambda c: {}, "driver")
    assert bridge.suggest("ray-1")["meta"]["cell_id"] == "plain-ce/seed=0/fold=1"
    for _ in range(3):
        bridge.suggest("ray-n")
    assert not [t for t in study.get_trials() if t.state == TrialState.PRUNED]


def test_a_fold_this_driver_is_still_storing_counts_before_the_next_claim(tmp_path):
    """Finished trials are stored by a background writer; the claim waits for it, so a fold that
    finished a moment ago is judged on (else the crippled config would slip through to fold 2)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / "p.yaml").write_text(PRUNED_STUDY)
    spec = load_study(str(tmp_path / "p.yaml"), "smoke")
    cells = spec.cells()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    late = next(c for c in cells[:8] if c.variant == "bad" and c.meta["fold"] == 1)
    for c in cells[:8]:
        if c is not late:
            _store_fold(study, spec, c, {"bad": 0.1}.get(c.variant, 0.6 + 0.01 * c.meta["fold"]))
    bridge = OptunaBridge(study, spec, cells[8:], 0, lambda c: {}, "driver")
    with ThreadPoolExecutor(1) as writer:
        bridge._pending.append(writer.submit(lambda: (time.sleep(1.5), _store_fold(study, spec, late, 0.1))))
        claimed = [bridge.suggest(f"ray-{i}")["meta"]["cell_id"] for i in range(4)]
    assert "bad/seed=0/fold=2" not in claimed
    assert [t.user_attrs["cell_id"] for t in study.get_trials() if t.state == TrialState.PRUNED] == [
        "bad/seed=0/fold=2", "bad/seed=0/fold=3"]


@pytest.mark.parametrize(("prune", "needle"), [
    ("{name: hyperband}", "cv.prune: unknown fold pruner 'hyperband'; valid: none, wilcoxon"),
    ("{name: wilcoxon, options: {p_value: 0.1}}", "cv.prune.options: "),
    ("{name: wilcoxon, options: {p_threshold: 2}}", "cv.prune.options: p_threshold must be between 0 and 1"),
    ("{name: wilcoxon, options: {p_threshold: 0.1}}", "needs 4 completed folds before it can be pruned, and "
                                                      "cv.folds is 3"),
    ("[wilcoxon]", "cv.prune must be a name or {name, options}"),
])
def test_bad_cv_prune_options_are_refused_with_one_line(tmp_path, prune, needle):
    text = STUDY.replace('group_by: "re:^(\\\\d{3})"}', f"group_by: none, prune: {prune}}}")
    (tmp_path / "cv.yaml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_study(str(tmp_path / "cv.yaml"), "smoke")
    assert needle in str(exc.value) and "\n" not in str(exc.value) and str(tmp_path / "cv.yaml") in str(exc.value)


E2E = """
name: cv-prune-e2e
question: Are the later folds of a config that is clearly worse on its first folds skipped?
data: {{dataset: folder, data_path: {data}}}
base: {{backbone: test_resnet, img_size: 32, epochs: 2, warmup_epochs: 0, batch_size: 16, aug_strength: 0.0}}
seeds: [0]
cv: {{folds: 4, group_by: none, prune: {{name: wilcoxon, options: {{p_threshold: 0.3, n_startup_steps: 2}}}}}}
budget: {{max_concurrent: 1}}
design: {{kind: one_at_a_time, baseline: plain-ce, variants: {{frozen: {{lr: 1.0e-9}}}}}}
"""


def test_launch_skips_the_later_folds_of_a_crippled_variant_and_relaunch_runs_nothing(study_env):
    """fer-study launch end to end: 4 colour classes a tiny net tells apart in 2 epochs, and a variant
    that cannot learn (lr 1e-9). One trial at a time, so the order is fixed: the crippled config is
    judged before its fold 2 on folds 0-1 (both worse: Wilcoxon p = 0.25 < 0.3) and both its
    later folds are skipped."""
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]):
        d = study_env / "faces" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(24):
            img = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")
    (study_env / "e2e.yaml").write_text(E2E.format(data=study_env / "faces"))
    url = f"sqlite:///{study_env / 'e2e.db'}"

    out = fer_cli("launch", str(study_env / "e2e.yaml"), "--storage", url, "--profile", "smoke", cwd=study_env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "6 run now, 2 fold trials skipped by pruning across folds" in " ".join(out.stdout.split())
    trials = optuna.load_study(study_name="cv-prune-e2e", storage=url).get_trials()
    by_cell = {t.user_attrs["cell_id"]: t for t in trials}
    assert len(by_cell) == len(trials) == 8
    for f in range(4):
        assert by_cell[f"plain-ce/seed=0/fold={f}"].state == TrialState.COMPLETE
    for f in (0, 1):
        frozen = by_cell[f"frozen/seed=0/fold={f}"]
        assert frozen.state == TrialState.COMPLETE
        assert frozen.value < by_cell[f"plain-ce/seed=0/fold={f}"].value
    for f in (2, 3):
        t = by_cell[f"frozen/seed=0/fold={f}"]
        assert t.state == TrialState.PRUNED and "train_seconds" not in t.user_attrs  # never trained
        assert t.user_attrs["pruned_by"] == "wilcoxon across folds vs config plain-ce/seed=0"

    again = fer_cli("launch", str(study_env / "e2e.yaml"), "--storage", url, "--profile", "smoke", cwd=study_env)
    assert again.returncode == 0 and "0 run now" in again.stdout, again.stderr[-2000:]
    assert len(optuna.load_study(study_name="cv-prune-e2e", storage=url).get_trials()) == 8

    data = load_study_data(optuna.load_study(study_name="cv-prune-e2e", storage=url))
    row = build_table(data).set_index("variant").loc["frozen"]
    assert row["n_seeds"] == 2 and row["n_fold_skipped"] == 2 and row["n_pruned"] == 0  # mean over 2 folds
    assert row["verdict"].startswith("pruned after 2/4 folds (wilcoxon across folds vs config plain-ce/seed=0")
    assert row["n_paired"] == 2  # Δ paired over the folds both configs have
