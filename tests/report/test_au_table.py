"""The report's Action Unit table: per AU, each AU-trained variant's test F1 (validation thresholds) and
ROC AUC, mean ± SD over seeds, from the per-AU lists the trials stored (computed by hand here)."""

from __future__ import annotations

import numpy as np
import optuna

from fer_core.data.dataset import AU_VOCAB
from fer_core.report.table import au_frame, build_table, load_study_data, markdown
from fer_core.study.outputs import pack_classes

LABELS = np.array([0] * 20 + [1] * 8 + [2] * 4)
K = len(AU_VOCAB)


def _per_au(seed: int, offset: float) -> list[float]:
    v = np.random.default_rng(seed).random(K) * 0.5 + offset
    v = v.tolist()
    v[3] = float("nan")  # an AU this split cannot score
    return v


def _study(tmp_path, with_au: bool = True) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", direction="maximize")
    study.set_user_attr("class_names", ["happy", "sad", "fear"])
    study.set_user_attr("class_counts", [300, 40, 6])
    study.set_user_attr("spec", {"design": {"baseline": "plain-ce", "variants": {"au_multitask": {}}}})
    for variant in ("plain-ce", "au_multitask"):
        for seed in range(3):
            t = study.ask()
            test = {"macro_f1": 0.5}
            if variant == "au_multitask" and with_au:
                test |= {"au_f1_per_au": _per_au(seed, 0.2), "au_auc_per_au": _per_au(seed + 10, 0.5)}
            attrs = {"variant": variant, "seed": seed, "test_metrics": test,
                     "val_metrics": {"macro_f1": 0.5, "accuracy": 0.5, "balanced_accuracy": 0.5, "f1": [0.5] * 3},
                     "predictions_packed": {"test": {"labels": pack_classes(LABELS), "pred": pack_classes(LABELS)}}}
            for k, val in attrs.items():
                t.set_user_attr(k, val)
            study.tell(t, 0.5)
    return study


def test_the_au_table_holds_the_seed_mean_and_sd_of_each_au_for_au_trained_variants_only(tmp_path):
    data = load_study_data(_study(tmp_path))
    frame = au_frame(data).set_index("AU")
    assert list(frame.columns) == ["au_multitask F1", "au_multitask AUC"]  # plain-ce trained no AU head
    f1 = np.array([_per_au(s, 0.2) for s in range(3)])
    auc = np.array([_per_au(s + 10, 0.5) for s in range(3)])
    a = 5
    assert frame.loc[f"AU{AU_VOCAB[a]}", "au_multitask F1"] == f"{f1[:, a].mean():.2f} ± {f1[:, a].std(ddof=1):.2f}"
    assert frame.loc[f"AU{AU_VOCAB[a]}", "au_multitask AUC"] == f"{auc[:, a].mean():.2f} ± {auc[:, a].std(ddof=1):.2f}"
    assert frame.loc[f"AU{AU_VOCAB[3]}", "au_multitask F1"] == "n.e."
    assert "Action Units on the test split" in markdown(data, build_table(data))


def test_a_study_without_au_trained_trials_has_no_au_table(tmp_path):
    data = load_study_data(_study(tmp_path, with_au=False))
    assert au_frame(data) is None and "Action Units" not in markdown(data, build_table(data))
