"""A sequential design's looks planned from the stored trials (``fer_core/study/looks.py``) with the
report's judge (``report.table.sequential_judge``), on a bare Optuna study (no Ray): look 1 is the
first seeds of every row, a judged look hands the next look's seeds to the open rows only, finished
cells are never planned again, and the report shows the same replay per row."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from fer_core.errors import ConfigError
from fer_core.report.table import build_table, load_study_data, markdown, report_frames, sequential_judge
from fer_core.study import looks
from fer_core.study.looks import next_look
from fer_core.study.outputs import pack_classes
from fer_core.study.spec import load_study

LABELS = np.array([0] * 40 + [1] * 25 + [2] * 12)
STUDY = """
# t: a sequential one-at-a-time study (tests)
name: t
question: do the fixes help?
seeds: [0, 1, 2, 3, 4, 5]
design:
  kind: one_at_a_time
  baseline: plain
  variants: {strong: {loss: focal}, same: {loss: balanced_softmax}, noisy: {sampler: sqrt}}
  sequential: {looks: [3, 4, 6], min_effect: 0.3}
"""


def _pred(variant: str, seed: int) -> np.ndarray:
    """Baseline: rare classes missed at 50 %; strong: at 1 % (a large effect); same: the baseline's
    predictions; noisy: the baseline's rate with its own draws. A grid cell with focal is strong."""
    stream = {"plain": 1, "same": 1, "strong": 2, "noisy": 3}.get(variant, 4 + sum(map(ord, variant)))
    rng = np.random.default_rng([seed, stream])
    pred = LABELS.copy()
    miss = 0.01 if variant == "strong" or "focal" in variant else 0.5
    pred[(LABELS > 0) & (rng.random(len(LABELS)) < miss)] = 0
    return pred


def _store(study: optuna.Study, cells) -> None:
    from sklearn.metrics import f1_score

    for c in cells:
        t = study.ask()
        pred = _pred(c.variant, c.seed)
        v = float(f1_score(LABELS, pred, average="macro"))
        for k, val in {**c.attrs, "val_metrics": {"macro_f1": v}, "test_metrics": {"macro_f1": v},
                       "predictions_packed": {"test": {"labels": pack_classes(LABELS),
                                                       "pred": pack_classes(pred)}}}.items():
            t.set_user_attr(k, val)
        study.tell(t, v)


@pytest.fixture
def setup(tmp_path):
    return _setup(tmp_path, STUDY)


def _setup(tmp_path, text: str):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    spec = load_study(str(path), "cpu")
    study = optuna.create_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}", direction="maximize")
    study.set_user_attr("class_names", ["a", "b", "c"])
    study.set_user_attr("class_counts", [300, 40, 8])
    study.set_user_attr("design", spec.design)
    study.set_user_attr("spec", spec.resolved)
    return spec, study


def test_each_look_plans_the_open_rows_next_seeds_and_never_a_finished_cell(setup):
    spec, study = setup
    with pytest.raises(ConfigError, match=r"design\.sequential needs the report's judge"):
        next_look(spec, study, None)
    state, todo = next_look(spec, study, sequential_judge)
    assert state.looks_done == 0
    assert sorted((c.variant, c.seed) for c in todo) == sorted((v, s) for v in ("plain", "strong", "same", "noisy")
                                                               for s in (0, 1, 2))
    _store(study, todo[:5])  # a driver killed mid-look: the look's other cells are still to run
    state, rest = next_look(spec, study, sequential_judge)
    assert state.looks_done == 0 and [c.cell_id for c in rest] == [c.cell_id for c in todo[5:]]
    _store(study, rest)
    seen = {c.cell_id for c in todo}
    for _ in range(3):  # look by look, as the launch would run them
        state, todo = next_look(spec, study, sequential_judge)
        assert not {c.cell_id for c in todo} & seen  # a finished cell is never planned again
        want = state.next_seeds()
        for c in todo:
            row = "" if c.variant == "plain" else c.variant
            assert row in want and c.seed in spec.seeds[:want[row]]
        assert {("" if c.variant == "plain" else c.variant) for c in todo} == set(want)
        if not todo:
            break
        _store(study, todo)
        seen |= {c.cell_id for c in todo}
    assert state.finished and not todo
    assert state.rows["strong"].status == "better"
    assert state.rows["same"].status == "futility"  # the baseline's own predictions: nothing to find
    assert state.trainings() == len(study.trials) < state.fixed_trainings() == 4 * 6

    data = load_study_data(study, planned=spec.n_planned())  # as the report command reads it
    full = build_table(data)
    table = full.set_index("variant")
    assert table.loc["strong", "looks_run"] == state.rows["strong"].looks_run
    assert table.loc["strong", "seeds_used"] == state.rows["strong"].seeds == table.loc["strong", "n_seeds"]
    assert table.loc["strong", "verdict"].startswith("better than the baseline (sequential")
    assert table.loc["same", "stop_reason"].startswith("futility")
    assert table.loc["strong", "level_spent"] == pytest.approx(state.rows["strong"].spent)
    text = markdown(data, full, report_frames(data, full))
    assert f"{state.trainings()} trainings against 24 for the fixed design at 6 seeds" in text
    assert "level spent" in text and "stopped" in text
    assert "of at most 24 planned (sequential design)" in text and "partial" not in text


def test_a_grids_combinations_are_the_rows_of_its_looks_in_the_launch_and_the_report(tmp_path):
    text = STUDY.replace("""  kind: one_at_a_time
  baseline: plain
  variants: {strong: {loss: focal}, same: {loss: balanced_softmax}, noisy: {sampler: sqrt}}""", """  kind: grid
  factors: {loss: [ce, focal], sampler: [none, sqrt]}""")
    spec, study = _setup(tmp_path, text)
    rows = looks.rows(spec)
    assert rows == ["loss=ce,sampler=sqrt", "loss=focal,sampler=none", "loss=focal,sampler=sqrt"]
    state, todo = next_look(spec, study, sequential_judge)
    assert len(todo) == 4 * 3  # every combination, the baseline (the first) included, at 3 seeds
    while todo:
        _store(study, todo)
        state, todo = next_look(spec, study, sequential_judge)
    assert state.rows["loss=focal,sampler=none"].status == "better"
    data = load_study_data(study)
    table = build_table(data).set_index("variant")
    assert list(data.sequential.rows) == rows  # the report replays the launch's rows
    for r in rows:
        assert table.loc[r, "seeds_used"] == state.rows[r].seeds == table.loc[r, "n_seeds"]
