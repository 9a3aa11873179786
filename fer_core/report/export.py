"""``fer-study report``: the ablation table from the storage, in Markdown, CSV, LaTeX and HTML.

The report only reads: the storage is never written, so a report of a running study is
safe and a failing report loses nothing.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from fer_core.errors import FerError
from fer_core.report.cams import cam_frame, cam_markdown
from fer_core.report.plots import caption, make_plots
from fer_core.report.table import (
    POSTHOC_TITLE,
    adequacy_line,
    build_table,
    design_line,
    header_lines,
    load_study_data,
    markdown,
    report_frames,
    search_extras,
    status_line,
)
from fer_core.study.artifacts import STORE_ATTR, open_store, study_artifact_dir
from fer_core.study.storage import load_stored_study, planned_trials, storage_url

FORMATS = ("md", "csv", "tex", "html")
CAM_TABLE = "Where the model looks: activation mass in the face half of each class's AUs (validation, vs baseline)"


def _writable_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fer-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise FerError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    return out


MISSING_STORE = "ECE/NLL/Brier columns and the reliability diagram"  # what needs the stored logits


def missing_store_warning(study: optuna.Study, where: Path) -> str:
    """The one line a report without its artifact store prints (it still has every held-out column:
    the predictions are user attrs; only what needs the stored logits is left out)."""
    how = "recorded at launch" if study.user_attrs.get(STORE_ATTR) else "default"
    return (f"warning: no artifact store at {where} ({how}): the {MISSING_STORE} are left out; "
            "pass --artifacts DIR (the launch's store)")


def load(name: str, storage: str | None, artifacts: str | None = None, warnings: list[str] | None = None):
    """(study, StudyData, table) from the storage; errors name the study and the storage. A missing
    artifact store is a line appended to ``warnings``."""
    url = storage_url(storage)
    study = load_stored_study(name, url)
    where = study_artifact_dir(study, url, artifacts)
    store = open_store(where, create=False)
    if store is None and warnings is not None:
        warnings.append(missing_store_warning(study, where))
    data = load_study_data(study, planned=planned_trials(study), store=store)
    return study, data, build_table(data)


def _latex(df: pd.DataFrame, caption: str) -> str:
    esc = df.map(lambda v: str(v).replace("★ ", "").replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")
                 .replace("Δ", r"$\Delta$").replace("–", "--"))
    esc.columns = [str(c).replace("%", r"\%").replace("Δ", r"$\Delta$").replace("_", r"\_") for c in df.columns]
    return esc.style.hide(axis="index").to_latex(hrules=True, caption=caption, position="htbp")


def _img(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{b64}" style="max-width:100%">'


def _html(title: str, header: list[str], status: str, md_tables: list[tuple[str, pd.DataFrame]],
          figures: list[tuple[str, str, Path]], notes: str, opening: str = "") -> str:
    """A self-contained page: the adequacy sentence (``opening``), the header (question, data, profile,
    budget), the tables, then each figure with its title and caption."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:110em}"
             "table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
             "th{background:#eee}dl.header{display:grid;grid-template-columns:max-content auto;gap:2px 1em}"
             "dl.header dt{font-weight:bold}dl.header dd{margin:0}figure{margin:1em 0}"
             "figcaption{font-size:13px;color:#333;max-width:60em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", *([f"<p><b>{html.escape(opening)}</b></p>"] if opening else []),
             "<dl class='header'>"]
    for line in header:
        key, _, value = line.partition(": ")
        parts.append(f"<dt>{html.escape(key)}</dt><dd>{html.escape(value)}</dd>")
    parts += ["</dl>", f"<p>{html.escape(status)}</p>"]
    for heading, df in md_tables:
        parts += [f"<h2>{html.escape(heading)}</h2>", df.to_html(index=False, escape=True)]
    for i, (fig_title, text, path) in enumerate(figures, 1):
        parts += [f"<h2>Figure {i}. {html.escape(fig_title)}</h2>",
                  f"<figure>{_img(path)}<figcaption><b>Figure {i}.</b> {html.escape(text)}</figcaption></figure>"]
    parts += [f"<p>{html.escape(notes)}</p></body></html>"]
    return "\n".join(parts)


def _figures(data, plots: dict[str, Path]) -> list[tuple[str, str, Path]]:
    """(title, caption, file) of each figure written, in report order."""
    return [(*caption(key, data), path) for key, path in plots.items()]


def report(
    name: str, storage: str | None = None, formats: tuple[str, ...] = FORMATS, out: str | None = None,
    artifacts: str | None = None,
) -> dict[str, Any]:
    """Write the report files; return {"files": [...], "markdown": str, "status": str}."""
    for f in formats:
        if f not in FORMATS:
            raise FerError(f"--format: unknown format {f!r}; valid: {', '.join(FORMATS)}, all")
    warnings: list[str] = []
    study, data, table = load(name, storage, artifacts, warnings)
    # made only once the study loads: a refused report leaves no empty reports/NAME behind (--out was
    # probed while the arguments were parsed)
    out_dir = _writable_dir(Path(out or Path("reports") / name))
    frames = report_frames(data, table)  # every format below lays out these same tables
    md = markdown(data, table, frames)
    files: list[Path] = []
    extras = search_extras(study, data) if data.design == "search" else None
    if extras:
        md += "\n### Best trials\n\n" + extras["best_trials"].to_markdown(index=False) + "\n"
        if extras["importances"]:
            imp = pd.DataFrame({"parameter": list(extras["importances"]),
                                "importance (fANOVA)": [f"{v:.3f}" for v in extras["importances"].values()]})
            md += "\n### Parameter importances\n\n" + imp.to_markdown(index=False) + "\n"
        else:
            md += f"\nParameter importances unavailable: {extras['importance_note']}\n"
        if extras["best_config"]:
            path = out_dir / "best-config.yaml"
            path.write_text(f"# best config of study {name} (trial {extras['best_trial']}); "
                            f"run it with: fer-study train --config {path.name}\n"
                            + yaml.safe_dump(extras["best_config"], sort_keys=True))
            files.append(path)
            md += f"\nBest config written to `{path.name}` (`fer-study train --config {path.name}`).\n"
    cams = cam_frame(data, table)  # None unless trials stored class activation maps (cam_samples)
    if cams is not None:
        md += f"\n### {CAM_TABLE}\n\n" + cam_markdown(cams) + "\n"
    plots = make_plots(data, table, out_dir) if ("html" in formats or "md" in formats) else {}
    files += list(plots.values())
    if "md" in formats:
        md_plots = "".join(f"\n### Figure {i}. {t}\n\n![{t}]({p.name})\n\n*Figure {i}.* {c}\n"
                           for i, (t, c, p) in enumerate(_figures(data, plots), 1))
        (out_dir / "report.md").write_text(md + md_plots)
        files.append(out_dir / "report.md")
    if "csv" in formats:
        table.to_csv(out_dir / "report.csv", index=False, float_format="%.17g")
        trials = data.trials.drop(columns=["confusion_matrix"])
        trials.to_csv(out_dir / "trials.csv", index=False, float_format="%.17g")
        files += [out_dir / "report.csv", out_dir / "trials.csv"]
        if data.effects is not None:  # a two-level grid's main effects and interactions
            data.effects.to_csv(out_dir / "effects.csv", index=False, float_format="%.17g")
            files.append(out_dir / "effects.csv")
        if cams is not None:
            cams.to_csv(out_dir / "cams.csv", index=False, float_format="%.17g")
            files.append(out_dir / "cams.csv")
    if "tex" in formats:
        # comments: the file is \\input into a paper, and the header is for whoever opens it
        tex = "".join(f"% {line}\n" for line in [adequacy_line(data).replace("**", ""), f"{name}: ablation report",
                                                  *header_lines(data), status_line(data), design_line(data, table)])
        tex += _latex(frames.summary, f"{name}: test {data.metric} with 95\\% CIs over seeds and test "
                     "images; validation (selection split) secondary")
        tex += "\n" + _latex(frames.groups, f"{name}: class groups, test F1 and $\\Delta$")
        tex += "\n" + _latex(frames.per_class, f"{name}: per-class test F1 [95\\% CI]; column: class "
                              "(training/test images)")
        if frames.posthoc is not None:
            tex += "\n" + _latex(frames.posthoc, f"{name}: post-hoc corrections of every variant, test and gain "
                                  "[95\\% CI]")
        (out_dir / "report.tex").write_text(tex)
        files.append(out_dir / "report.tex")
    if "html" in formats:
        tables = [("Ablation table (held-out: test split)", frames.summary),
                  ("Class groups (test F1 and Δ vs baseline, 95 % CI)", frames.groups),
                  ("Per-class test F1 (95 % CI)", frames.per_class)]
        if frames.per_class_delta is not None:
            tables.append(("Per-class Δ test F1 vs baseline (95 % CI)", frames.per_class_delta))
        if frames.posthoc is not None:
            tables.append((POSTHOC_TITLE.format(m=data.metric), frames.posthoc))
        if frames.aus is not None:
            tables.append(("Action Units (test F1 at validation thresholds, ROC AUC; mean ± SD over seeds)", frames.aus))
        if frames.calibration is not None:
            tables.append(("Calibration (test split)", frames.calibration))
        if cams is not None:
            tables.append((CAM_TABLE, cams))
        if extras:
            tables.append(("Best trials", extras["best_trials"]))
        page = _html(f"{name}: ablation report", header_lines(data), f"{status_line(data)}. {design_line(data, table)}.",
                     tables, _figures(data, plots), _reading_note(md), adequacy_line(data).replace("**", ""))
        (out_dir / "report.html").write_text(page)
        files.append(out_dir / "report.html")
    return {"files": [str(f) for f in files], "markdown": md, "status": status_line(data), "table": table,
            "data": data, "out": str(out_dir), "warnings": warnings}


def _reading_note(md: str) -> str:
    """The "how to read it" paragraph of the Markdown report (its first line starting "Every effect")."""
    return next((ln for ln in md.splitlines() if ln.startswith("Every effect")), "")


def note_markdown(study: optuna.Study, planned: int | None) -> str | None:
    """The study note for optuna-dashboard: the current table (no artifact reads: driver hot path)."""
    data = load_study_data(study, planned=planned)
    try:
        table = build_table(data)
    except FerError:  # no complete trial yet: no table to show
        return None
    return markdown(data, table) + "\n\n" + dashboard_caveats(study)


def dashboard_caveats(study: optuna.Study) -> str:
    """What optuna-dashboard (0.21) shows that this study cannot change, said in the note instead of
    patched: its trial list, its raw floats, and plots meaningless for a designed study."""
    metric = (study.metric_names or ["value"])[0]
    design = study.user_attrs.get("design", "?")
    lines = [f"**Reading this dashboard.** The objective ({metric}) is the validation {metric} that selected each "
             "trial's epoch; the tables above judge on the held-out test split.",
             "What optuna-dashboard cannot do here: its trial list shows only \"Trial N\" (each trial's variant, "
             "seed and rounded values are in its note and its `summary` user attr, a column of the Trials (Table) "
             "view); it prints objective values unrounded; it draws these tables without borders (no style of "
             "ours reaches its page, raw HTML needs its allow-unsafe mode, which turns off its Content-Security-"
             "Policy, and in a code block the wide tables would widen the whole page): `fer-study report` writes "
             "the same tables bordered (report.html) and as report.md."]
    if design != "search":
        lines.append(f"It cannot hide parameter importance, contour or slice plots: for this {design} design they "
                     "are computed from a few fixed configs, not samples of a space, and mean nothing; read the "
                     "ablation table above.")
    return "\n\n".join(lines)


def refresh_note(study: optuna.Study, planned: int | None) -> None:
    import optuna_dashboard

    body = note_markdown(study, planned)
    if body:
        optuna_dashboard.save_note(study, body)
