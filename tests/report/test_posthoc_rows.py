"""The report's post-hoc rows: held-out figures and the gain over the variant itself, by hand from storage."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from sklearn.metrics import f1_score

from fer_core.report.table import build_table, group_frame, load_study_data, markdown, report_frames
from fer_core.study.outputs import pack_classes

LABELS = np.array([0] * 30 + [1] * 10 + [2] * 6)


def _pred(seed: int, miss: float, stream: int) -> np.ndarray:
    """Rare-class images called class 0 at rate ``miss``."""
    rng = np.random.default_rng([seed, stream])
    pred = LABELS.copy()
    pred[(LABELS > 0) & (rng.random(len(LABELS)) < miss)] = 0
    return pred


def _study(tmp_path, adjusted: tuple[str, ...] = ()) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    study.set_user_attr("class_names", ["happy", "sad", "fear"])
    study.set_user_attr("class_counts", [300, 40, 6])
    study.set_user_attr("spec", {"design": {"baseline": "plain-ce", "variants": {"bsm": {}}}})
    for variant, miss, stream in (("plain-ce", 0.6, 1), ("bsm", 0.3, 2)):
        for seed in range(4):
            t = study.ask()
            plain, la = _pred(seed, miss, stream), _pred(seed, miss / 2, stream)  # LA recovers half the misses
            v = f1_score(LABELS, plain, average="macro")
            attrs = {"variant": variant, "seed": seed,
                     "val_metrics": {"macro_f1": v, "accuracy": v, "balanced_accuracy": v, "f1": [v] * 3},
                     "test_metrics": {"macro_f1": v},
                     "predictions_packed": {"test": {"labels": pack_classes(LABELS), "pred": pack_classes(plain)}},
                     "posthoc_metrics": {"logit_adjust": {
                         "tau": [0.75, 1.0, 1.0, 1.25][seed], "val": {"macro_f1": v + 0.01},
                         "test": {"macro_f1": f1_score(LABELS, la, average="macro")}, "test_pred": pack_classes(la)}},
                     "config": {"posthoc": "logit_adjust" if variant in adjusted else "none"}}
            for k, val in attrs.items():
                t.set_user_attr(k, val)
            study.tell(t, v)
    return study


def test_a_posthoc_row_is_paired_with_its_own_variant_and_kept_out_of_the_holm_family(tmp_path):
    data = load_study_data(_study(tmp_path))
    table = build_table(data).set_index("variant")
    row = table.loc["plain-ce +posthoc:logit_adjust"]
    f1 = {name: np.array([f1_score(LABELS, _pred(s, miss, 1), average="macro") for s in range(4)])
          for name, miss in (("plain", 0.6), ("la", 0.3))}
    assert row["derived"] == "posthoc" and row["posthoc_of"] == "plain-ce" and row["posthoc_tau"] == 1.0
    assert row["test_score"] == pytest.approx(f1["la"].mean())  # its own held-out figure, with both parts
    assert row["test_score_ci_lo"] < row["test_score"] < row["test_score_ci_hi"]
    assert row["posthoc_gain"] == pytest.approx((f1["la"] - f1["plain"]).mean())  # vs the variant, by seed
    assert row["posthoc_gain_ci_lo"] > 0  # every seed gains on the same images
    # few-shot (< 20 training images: fear) gain, by hand
    few = {n: np.array([f1_score(LABELS, _pred(s, m, 1), labels=[2], average=None)[0] for s in range(4)])
           for n, m in (("plain", 0.6), ("la", 0.3))}
    assert row["posthoc_few_gain"] == pytest.approx((few["la"] - few["plain"]).mean())
    # `delta` keeps meaning Δ vs the baseline: a derived row has none, and no Holm p (one family: real rows)
    assert row["delta"] != row["delta"] and row["p_holm"] != row["p_holm"]
    assert table["p_holm"].notna().sum() == 1 and "of 1 tests" in table.loc["bsm", "verdict"]
    assert table.loc["bsm", "best"] and not row["best"]
    assert row["verdict"].startswith("derived: logit_adjust of plain-ce after training (tau chosen on validation")
    assert "bsm +posthoc:logit_adjust" in table.index
    groups = group_frame(data, build_table(data)).set_index("variant")
    assert groups.loc["plain-ce +posthoc:logit_adjust", "few-shot (1) Δ"] == ""  # its gain is in the verdict
    assert "plain-ce +posthoc:logit_adjust" in markdown(data, build_table(data))


def test_the_readable_tables_keep_the_baselines_posthoc_rows_and_sum_up_the_rest(tmp_path):
    """report.csv keeps every post-hoc row; the readable tables show the baseline's (the literature's
    cheap baselines) and one compact table of every variant's corrections, so they do not double."""
    data = load_study_data(_study(tmp_path))
    table = build_table(data)
    frames = report_frames(data, table)
    shown = list(frames.summary["variant"].str.removeprefix("★ "))
    assert shown == ["plain-ce", "plain-ce +posthoc:logit_adjust", "bsm"]
    assert list(frames.per_class["variant"]) == shown and list(frames.groups["variant"]) == shown
    compact = frames.posthoc.set_index("variant")
    assert list(compact.index) == ["plain-ce", "bsm"]
    row = table.set_index("variant").loc["bsm +posthoc:logit_adjust"]
    assert compact.loc["bsm", "logit_adjust: gain"] == (
        f"{row['posthoc_gain']:+.3f} [{row['posthoc_gain_ci_lo']:.3f}, {row['posthoc_gain_ci_hi']:.3f}]")
    assert compact.loc["bsm", "logit_adjust: test macro_f1"].startswith(f"{row['test_score']:.3f} [")
    md = markdown(data, table, frames)
    assert "| bsm +posthoc:logit_adjust" not in md and "Post-hoc corrections of every trained variant" in md


def test_a_variant_whose_output_is_a_correction_gets_no_rows_correcting_its_raw_model(tmp_path):
    table = build_table(load_study_data(_study(tmp_path, adjusted=("bsm",)))).set_index("variant")
    assert "plain-ce +posthoc:logit_adjust" in table.index and "bsm +posthoc:logit_adjust" not in table.index
