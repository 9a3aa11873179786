"""Class activation maps as trial artifacts (cam_samples): made by train_fer at the selected epoch,
written by the worker beside the probabilities, uploaded by the driver like the confusion matrix, and
read back by the report into the per-class AU-half table and the tail classes' figure."""

from __future__ import annotations

import numpy as np
import pytest
from optuna.artifacts import get_all_artifact_meta

from fer_core.cam import half_mass
from fer_core.report.cams import cam_figure, cam_frame, cam_markdown
from fer_core.report.table import build_table, load_study_data
from fer_core.study.artifacts import open_store, upload_trial_artifacts
from fer_core.study.inmemory import quiet_memory_study
from fer_core.study.outputs import CAMS_NPZ, read_cams, write_trial_outputs
from fer_core.study.trainable import _summary
from fer_core.train import train_fer

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0,
        "au_weight": 1.0, "cam_samples": 3}


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory):
    out = {}
    for variant, head in (("baseline", "linear"), ("au_attention", "au_attention")):
        result = train_fer({**TINY, "head": head}, dataset=small)
        d = tmp_path_factory.mktemp(variant)
        write_trial_outputs(d, result)
        out[variant] = (result, d)
    return out


def test_maps_per_class_at_the_selected_epoch(trained, small):
    from fer_core.data.dataset import VAL

    base, att = trained["baseline"][0]["cams"], trained["au_attention"][0]["cams"]
    assert list(base) == list(small.class_names)  # every class has validation images in the sample
    n_val = np.bincount(small.labels[small.indices(VAL)].numpy(), minlength=small.num_classes)
    assert min(n_val) < 3  # a class with fewer images than cam_samples: all of them
    for c, (name, entry) in enumerate(att.items()):
        assert entry["mean"].dtype == entry["attention_mean"].dtype == np.float16
        assert entry["mean"].shape == entry["attention_mean"].shape == (48, 48)
        assert entry["n"] == min(3, n_val[c]) and entry["region"] in ("upper", "lower", None)
        assert entry["grid"].shape == (2 * 48, entry["n"] * 48, 3)  # Grad-CAM row and attention row
        assert "attention_mean" not in base[name] and base[name]["grid"].shape == (48, entry["n"] * 48, 3)
    assert {e["region"] for e in att.values()} >= {"upper", "lower"}  # the stand-in moves brows and mouth


def test_uploaded_like_the_confusion_matrix_and_read_back_by_the_report(trained, tmp_path):
    study = quiet_memory_study()
    store = open_store(tmp_path / "art")
    result = trained["baseline"][0]
    study.set_user_attr("class_names", result["class_names"])
    study.set_user_attr("class_counts", result["train_counts"])
    for variant, (res, out) in trained.items():
        summary = _summary(res)
        for seed in (0, 1):
            trial = study.ask()
            for k in ("val_metrics", "test_metrics", "val_tail_f1", "predictions_packed"):
                trial.set_user_attr(k, summary[k])
            trial.set_user_attr("variant", variant)
            trial.set_user_attr("seed", seed)
            assert upload_trial_artifacts(store, trial, summary, res["class_names"], str(out)) == []
            study.tell(trial, res["val"]["macro_f1"])
    names = {m.filename for m in get_all_artifact_meta(study.trials[2], storage=study._storage)}
    assert CAMS_NPZ in names and "cam_00_" + result["class_names"][0].replace(" ", "_") + ".png" in names
    assert sum(n.startswith("cam_") and n.endswith(".png") for n in names) == len(result["class_names"])

    stored = read_cams(store, study._storage, study.trials[2])
    att = trained["au_attention"][0]["cams"]
    for c, name in enumerate(result["class_names"]):
        np.testing.assert_array_equal(stored[c]["mean"], att[name]["mean"].astype(np.float32))
        np.testing.assert_array_equal(stored[c]["attention_mean"], att[name]["attention_mean"].astype(np.float32))
        assert stored[c]["region"] == att[name]["region"]

    data = load_study_data(study, store=store)
    table = build_table(data)
    frame = cam_frame(data, table)
    assert set(frame["variant"]) == {"baseline", "au_attention"}
    c = next(c for c, name in enumerate(result["class_names"]) if att[name]["region"])
    row = frame[(frame["class"] == result["class_names"][c]) & (frame["variant"] == "au_attention")].iloc[0]
    region = att[result["class_names"][c]]["region"]
    share = half_mass(att[result["class_names"][c]]["mean"].astype(np.float32), region)
    base = half_mass(trained["baseline"][0]["cams"][result["class_names"][c]]["mean"].astype(np.float32), region)
    assert row["au_half"] == region and row["n_trials"] == 2
    assert row["cam_share"] == pytest.approx(share) and row["cam_delta"] == pytest.approx(share - base)
    assert row["attention_share"] == pytest.approx(half_mass(stored[c]["attention_mean"], region))
    assert np.isnan(frame.loc[frame["variant"] == "baseline", "attention_share"]).all()  # a linear head has none
    md = cam_markdown(frame)
    assert f"{share:.3f}" in md and f"{share - base:+.3f}" in md and "au_half" in md
    assert cam_figure(data, table, tmp_path / "cams.png") and (tmp_path / "cams.png").stat().st_size > 1000


def test_the_dashboards_trial_page_lists_the_grids(trained, tmp_path):
    """optuna-dashboard (a real server, a real headless Chromium) lists a trial's grids among its artifacts
    and serves them as the PNGs the driver uploaded."""
    import optuna
    from helpers import launch_chromium, running_dashboard
    from playwright.sync_api import sync_playwright

    from fer_core.study.artifacts import STORE_ATTR

    url = f"sqlite:///{tmp_path}/fer-study.db"
    study = optuna.create_study(study_name="cams", storage=url, direction="maximize")
    store = open_store(tmp_path / "fer-study-artifacts")
    study.set_user_attr(STORE_ATTR, str(store.path))
    result, out = trained["au_attention"]
    trial = study.ask()
    assert upload_trial_artifacts(store, trial, _summary(result), result["class_names"], str(out)) == []
    study.tell(trial, result["val"]["macro_f1"])
    grids = sorted(m.filename for m in get_all_artifact_meta(trial, storage=study._storage)
                   if m.filename.startswith("cam_"))
    assert len(grids) == len(result["class_names"])
    with running_dashboard(url) as (base, _proc), sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/dashboard/studies/{study._study_id}/trials", wait_until="networkidle")
            for name in (grids[0], grids[-1], CAMS_NPZ):
                page.get_by_text(name).first.wait_for(timeout=30_000)
            meta = next(m for m in get_all_artifact_meta(trial, storage=study._storage) if m.filename == grids[-1])
            resp = page.request.get(f"{base}/artifacts/{study._study_id}/{trial._trial_id}/{meta.artifact_id}")
            assert resp.ok and resp.body() == (out / grids[-1]).read_bytes()
        finally:
            browser.close()
