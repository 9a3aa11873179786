"""k-fold CV as a study option: one trial per fold sharing a config_id; the report pools the folds out of fold."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from helpers import fer_cli
from optuna.trial import TrialState
from PIL import Image
from sklearn.metrics import f1_score

from fer_core.data.dataset import TEST, VAL
from fer_core.data.folds import fold_dataset, partition_seed
from fer_core.errors import ConfigError, FerError
from fer_core.report import stats
from fer_core.report.ensemble import build_ensemble
from fer_core.report.table import build_table, load_study_data, markdown
from fer_core.study.bridge import OptunaBridge
from fer_core.study.outputs import pack_classes, unpack_classes
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
    assert all("cv_repeat" not in c.params for c in cells)  # one repeat: the params they always had
    cfg = spec.trial_config(cells[4].params)
    assert (cfg["cv_folds"], cfg["cv_fold"], cfg["cv_group_by"]) == (3, 1, r"re:^(\d{3})")
    assert spec.n_planned() == 6

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", direction="maximize")
    bridge = OptunaBridge(study, spec, cells, 0, lambda c: {}, "driver")
    config = bridge.suggest("ray-trial-1")
    assert config["train"]["cv_fold"] == 0 and config["out_dir"] is None
    attrs = study.trials[0].user_attrs
    assert (attrs["fold"], attrs["config_id"], attrs["cell_id"]) == (0, "plain-ce/seed=0", "plain-ce/seed=0/fold=0")


def test_cv_repeats_give_every_seed_several_partitions(tmp_path):
    (tmp_path / "cv.yaml").write_text(STUDY.replace("cv: {folds: 3,", "cv: {folds: 3, repeats: 2,"))
    cells = load_study(str(tmp_path / "cv.yaml"), "smoke").cells()
    assert len(cells) == 2 * 2 * 3  # variants x repeats x folds (one seed)
    assert [c.meta["config_id"] for c in cells[:6]] == ["plain-ce/seed=0/repeat=0"] * 3 + ["plain-ce/seed=0/repeat=1"] * 3
    assert [(c.params["cv_repeat"], c.params["cv_fold"]) for c in cells[:6]] == [(r, f) for r in (0, 1) for f in range(3)]
    # the partition is drawn per (seed, repeat): repeats and seeds cut the pool differently
    assert len({partition_seed(0, s, r) for s in (0, 1) for r in (0, 1)}) == 4


@pytest.mark.parametrize(("patch", "needle"), [
    ('cv: {folds: 1}', "cv.folds must be an integer in 3..50"),
    ('cv: {folds: 2}', "cv.folds must be an integer in 3..50 (one fold held out, one selecting the epoch"),
    ('cv: {folds: 3, repeats: 0}', "cv.repeats must be an integer in 1..100, got 0"),
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


def test_a_trial_is_scored_on_its_held_out_fold_and_selects_on_the_next(small):
    result = train_fer({"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1,
                        "warmup_epochs": 0, "cv_folds": 3, "cv_fold": 2, "seed": 4}, dataset=small)
    ds = fold_dataset(small, 3, 2, seed=partition_seed(0, 4, 0))
    held = result["predictions"]["test"]
    assert sorted(held["index"].tolist()) == ds.indices(TEST).tolist()  # fold 2 of the pool, scored once
    assert not set(held["index"].tolist()) & set(small.indices(TEST).tolist())  # the source's test is set aside
    assert held["labels"].tolist() == small.labels[held["index"]].tolist()
    assert sum(result["val"]["support"]) == int((ds.split == VAL).sum())  # the next fold selected the epoch


# -- the report pools the folds of a (seed, repeat): out-of-fold predictions ------------------------------

POOL = np.array([0] * 40 + [1] * 20)  # the train+val pool's labels


def _pred(variant: str, seed: int) -> np.ndarray:
    """A whole-pool prediction for one (variant, seed): class-1 images called 0 at the variant's rate."""
    rng = np.random.default_rng([seed, len(variant)])
    pred = POOL.copy()
    miss = rng.random(len(POOL)) < {"plain-ce": 0.6, "bsm": 0.3}[variant]
    pred[(POOL == 1) & miss] = 0
    pred[(POOL == 0) & (rng.random(len(POOL)) < 0.05)] = 1
    return pred


def _cv_study(tmp_path, skip: tuple[str, int, int] | None = None, overlap: bool = False) -> optuna.Study:
    """3 seeds x 3 folds per variant, each fold trial storing only its held-out fold (shuffled order)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}", direction="maximize")
    study.set_user_attr("class_names", ["a", "b"])
    study.set_user_attr("class_counts", [50, 5])
    study.set_user_attr("spec", {"cv": {"folds": 3}})
    for variant in ("plain-ce", "bsm"):
        for seed in range(3):
            folds = np.array_split(np.random.default_rng(seed).permutation(len(POOL)), 3)  # per seed: its partition
            if overlap:
                folds[1] = np.concatenate([folds[1], folds[0][:1]])
            pred = _pred(variant, seed)
            for fold, idx in enumerate(folds):
                if skip == (variant, seed, fold):
                    continue
                t = study.ask()
                v = 0.5 + 0.1 * fold + (0.05 if variant == "bsm" else 0.0)
                for k, val in {"variant": variant, "seed": seed, "fold": fold, "config_id": f"{variant}/seed={seed}",
                               "val_metrics": {"macro_f1": v, "accuracy": v, "balanced_accuracy": v, "f1": [v, v],
                                               "tail_f1": v}, "test_metrics": {"macro_f1": 0.0},
                               "predictions_packed": {"test": {"labels": pack_classes(POOL[idx]),
                                                               "pred": pack_classes(pred[idx]),
                                                               "index": pack_classes(idx)}}}.items():
                    t.set_user_attr(k, val)
                study.tell(t, v)
    return study


def test_report_pools_the_folds_out_of_fold_and_pairs_by_seed(tmp_path):
    data = load_study_data(_cv_study(tmp_path))
    table = build_table(data).set_index("variant")
    row = table.loc["bsm"]
    assert row["n_seeds"] == 3 and row["seeds"] == "0,1,2"  # a unit is a seed: its 3 folds pooled
    assert row["val_macro_f1_mean"] == pytest.approx(0.65)  # validation: the mean over folds
    assert data.test_support == [40, 20]  # every pool image once

    # by hand: each seed's pooled prediction is the whole pool's; F1 on it, Δ paired by seed
    f1 = {v: np.array([f1_score(POOL, _pred(v, s), average="macro") for s in range(3)]) for v in ("plain-ce", "bsm")}
    assert row["test_score"] == pytest.approx(f1["bsm"].mean())
    assert row["test_macro_f1"] == pytest.approx(f1["bsm"].mean())
    assert row["delta"] == pytest.approx((f1["bsm"] - f1["plain-ce"]).mean())
    assert row["p_improve"] == pytest.approx(np.mean(f1["bsm"] > f1["plain-ce"]))
    # the image part is the pooled images' influences, paired image by image across the variants:
    # the same estimate from the hand-pooled predictions gives the same interval
    preds = {v: np.stack([_pred(v, s) for s in range(3)]) for v in ("plain-ce", "bsm")}
    a, pa = stats.f1_parts(POOL, preds["bsm"], 2)
    b, pb = stats.f1_parts(POOL, preds["plain-ce"], 2)
    e = stats.estimate(a.mean(-1), pa.mean(-1), b.mean(-1), pb.mean(-1))
    assert row["delta_se_images"] == pytest.approx(float(e.se_images)) and row["delta_se_images"] > 0
    assert row["delta_se_seeds"] == pytest.approx(float(e.se_seeds))
    # the interval: both parts with the row's Welch-Satterthwaite df (the image part's from the pool's classes)
    from scipy import stats as sps

    half = sps.t.ppf(0.975, row["delta_df"]) * float(np.hypot(e.se_seeds, e.se_images))
    assert (row["delta_ci_lo"], row["delta_ci_hi"]) == pytest.approx((row["delta"] - half, row["delta"] + half))
    assert "scored out of fold" in markdown(data, build_table(data))
    assert "held-out: out-of-fold pool, 60 images" in markdown(data, build_table(data))


def test_a_seed_with_a_fold_missing_has_no_pooled_estimate(tmp_path):
    data = load_study_data(_cv_study(tmp_path, skip=("bsm", 1, 2)))
    row = build_table(data).set_index("variant").loc["bsm"]
    assert row["n_seeds"] == 3 and row["n_paired"] == 2  # seed 1 keeps its validation, not its held-out part
    f1 = {v: np.array([f1_score(POOL, _pred(v, s), average="macro") for s in (0, 2)]) for v in ("plain-ce", "bsm")}
    assert row["delta"] == pytest.approx((f1["bsm"] - f1["plain-ce"]).mean())


def test_an_ensemble_of_fold_trials_is_refused_not_averaged_over_other_images(tmp_path):
    study = _cv_study(tmp_path)
    with pytest.raises(FerError, match="is a k-fold CV study: its trials are scored on different held-out folds"):
        build_ensemble(study, None, top=3)


def test_folds_that_overlap_are_refused_not_pooled(tmp_path):
    with pytest.raises(FerError, match="its folds held out overlapping images"):
        load_study_data(_cv_study(tmp_path, overlap=True))


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
base: {{backbone: test_resnet, img_size: 32, epochs: 4, warmup_epochs: 0, batch_size: 16, aug_strength: 0.0}}
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
        for i in range(32):
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
    table = build_table(data).set_index("variant")
    row = table.loc["frozen"]
    assert row["n_seeds"] == 1 and row["n_fold_skipped"] == 2 and row["n_pruned"] == 0  # seed 0: 2 folds done
    assert row["val_macro_f1_mean"] == pytest.approx(np.mean([by_cell[f"frozen/seed=0/fold={f}"].value for f in (0, 1)]))
    assert row["verdict"].startswith("pruned after 2/4 folds (wilcoxon across folds vs config plain-ce/seed=0")
    assert "no seed has all its folds complete: no held-out estimate" in row["verdict"]
    # the baseline's 4 folds pool into one out-of-fold prediction of every train+val image
    base = table.loc["plain-ce"]
    assert base["test_score"] == base["test_score"] and sum(data.test_support) == sum(
        len(unpack_classes(by_cell[f"plain-ce/seed=0/fold={f}"].user_attrs["predictions_packed"]["test"]["index"]))
        for f in range(4))
