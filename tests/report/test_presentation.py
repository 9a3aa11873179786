"""What a reader of the report sees (issue 19): the header in every format, class names and training
counts beside per-class numbers, titled and captioned figures, learning curves that stay readable with
many variants, and one warning line when the artifact store is not there. Numbers are the fixture
test's business (tests/report/test_fixture_report.py); these tests only read the committed study."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import optuna
import pandas as pd
import pytest

from fer_core.cli import main
from fer_core.report import plots
from fer_core.report.export import load
from fer_core.study.artifacts import STORE_ATTR, study_artifact_dir

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NAMES = [f"digit-{c}" for c in range(10)]


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("fx")
    shutil.copy(FIXTURES / "report-fixture.db", d / "report-fixture.db")
    return f"sqlite:///{d / 'report-fixture.db'}"


@pytest.fixture(scope="module")
def rendered(fixture_db, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    assert main(["report", "report-fixture", "--storage", fixture_db, "--format", "md", "tex", "html", "--out",
                 str(out), "--quiet"]) == 0
    return out


def test_every_format_opens_with_question_data_profile_and_budget(rendered):
    md, tex, page = ((rendered / f).read_text() for f in ("report.md", "report.tex", "report.html"))
    for text in (md, tex, page):
        assert "Does the stored study still report the same numbers" in text
        assert "digit-9 (2)" in text  # a class name with its training images
        assert "Profile" in text and "smoke" in text and "Budget" in text and "6 trials planned" in text
    assert tex.startswith("% Adequacy: ") and "\n% report-fixture: ablation report\n% Question: " in tex  # comments: \input stays valid


def test_per_class_tables_and_figures_carry_names_titles_and_captions(rendered):
    page = (rendered / "report.html").read_text()
    assert "0 digit-0 (100/30)" in page  # per-class column: class, training/test images
    for key, (title, _) in plots.FIGURES.items():
        if key not in ("reliability", "cams"):  # need artifacts (logits, activation maps) the fixture has not
            assert f"{title}</h2>" in page
    assert "Grad-CAM" not in page  # no maps stored: no figure and no table of them
    assert page.count("<figcaption>") == 4 and "<h2>heatmap</h2>" not in page
    md = (rendered / "report.md").read_text()
    assert "### Figure 1. Per-class test F1" in md and "*Figure 1.* Test F1 of every class" in md


def _captured(monkeypatch) -> list:
    figs: list = []
    monkeypatch.setattr(plots.plt, "close", figs.append)
    monkeypatch.setattr(plots.plt.Figure, "savefig", lambda *a, **k: None)
    return figs


def test_learning_curves_integer_epochs_loss_beside_metric_legend_outside(fixture_db, monkeypatch):
    _, data, table = load("report-fixture", fixture_db)
    data.trials["train_loss"] = [list(np.linspace(2.0, 0.5, 8)) for _ in range(len(data.trials))]
    figs = _captured(monkeypatch)
    plots.learning_curves(data, table, Path("unused.png"))
    (fig,) = figs
    val_ax, loss_ax = fig.axes
    assert loss_ax.get_ylabel() == "training loss" and val_ax.get_ylabel() == "validation macro_f1"
    fig.canvas.draw()
    ticks = [t.get_text() for t in val_ax.get_xticklabels() if t.get_text()]
    assert ticks and all(t.lstrip("−-").isdigit() for t in ticks), ticks  # 0 1 2 ..., never 0.2
    legend = loss_ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > loss_ax.get_window_extent().x1 - 1  # outside
    colours = {mcolors.to_hex(line.get_color()) for line in val_ax.get_lines()}
    assert colours <= {c.lower() for c in plots.OKABE_ITO} and len(colours) == 3


def test_many_variants_become_small_multiples_not_a_crowded_legend(fixture_db, monkeypatch):
    _, data, _ = load("report-fixture", fixture_db)
    copies = []
    for k in range(19):
        t = data.trials.copy()
        t["variant"] = f"v{k}"
        copies.append(t)
    data.trials = pd.concat(copies, ignore_index=True)
    table = pd.DataFrame({"variant": [f"v{k}" for k in range(19)], "derived": [""] * 19})
    figs = _captured(monkeypatch)
    plots.learning_curves(data, table, Path("unused.png"))
    (fig,) = figs
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == [f"v{k}" for k in range(19)]
    assert all(ax.get_legend() is None for ax in fig.axes)


def test_forest_ticks_use_the_decimals_the_step_needs():
    assert plots._delta_formatter(0.01)(0.004, 0) == "+0.004"  # not 0.0040, and not 0.00 for every tick
    assert plots._delta_formatter(0.8)(0.2, 0) == "+0.2" and plots._delta_formatter(0.8)(0.0, 0) == "0"


def test_a_missing_artifact_store_is_one_warning_naming_what_is_left_out(fixture_db, tmp_path, capsys):
    assert main(["report", "report-fixture", "--storage", fixture_db, "--format", "csv", "--out",
                 str(tmp_path / "o")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("warning: no artifact store at ")
    assert "ECE/NLL/Brier" in err[0] and "reliability diagram" in err[0]


def test_the_store_recorded_at_launch_is_found_without_artifacts(fixture_db, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FER_STUDY_ARTIFACTS", raising=False)
    db = tmp_path / "copy.db"
    shutil.copy(fixture_db.removeprefix("sqlite:///"), db)
    url = f"sqlite:///{db}"
    store = tmp_path / "elsewhere-artifacts"
    store.mkdir()
    study = optuna.load_study(study_name="report-fixture", storage=url)
    study.set_user_attr(STORE_ATTR, str(store))  # what a launch with --artifacts elsewhere-artifacts writes
    assert study_artifact_dir(study, url) == store
    assert study_artifact_dir(study, url, str(tmp_path / "given")) == tmp_path / "given"  # the flag still wins
    assert main(["report", "report-fixture", "--storage", url, "--format", "csv", "--out", str(tmp_path / "o")]) == 0
    assert "warning" not in capsys.readouterr().err
