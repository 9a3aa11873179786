"""k-fold CV as a study option: one trial per fold sharing a config_id; the report pairs by fold."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from fer_core.data.dataset import TEST, VAL
from fer_core.errors import ConfigError
from fer_core.report.table import build_table, load_study_data, markdown
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

    from fer_core.study.bridge import OptunaBridge

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
    for variant, vals in values.items():
        for fold, v in enumerate(vals):
            t = study.ask()
            for k, val in {"variant": variant, "seed": 0, "fold": fold, "config_id": f"{variant}/seed=0",
                           "val_metrics": {"macro_f1": v, "accuracy": v, "balanced_accuracy": v, "f1": [v, v],
                                           "tail_f1": v}, "test_metrics": {"macro_f1": v}}.items():
                t.set_user_attr(k, val)
            study.tell(t, v)
    data = load_study_data(study)
    table = build_table(data).set_index("variant")
    row = table.loc["bsm"]
    assert row["n_seeds"] == 3 and row["seeds"] == "0/0,0/1,0/2"
    assert row["val_macro_f1_mean"] == pytest.approx(np.mean(values["bsm"]))  # a config's value: the fold mean
    assert row["delta"] == pytest.approx(np.mean(np.subtract(values["bsm"], values["plain-ce"])))
    assert row["delta_ci_lo"] > 0  # paired by fold: every fold improves
    assert np.isnan(row["ci_images_lo"])  # folds validate on different images: no image bootstrap
    assert "k-fold cross-validation" in markdown(data, build_table(data))
