"""``fer-study`` command line.

Every user error (``FerError``) becomes one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from fer_core.argtypes import existing_path, host, int_range, key_value, out_dir, out_file, port
from fer_core.config_rules import DATASET_NAMES, GENERATED
from fer_core.console import console, err_console
from fer_core.errors import ConfigError, FerError, LaunchInterrupted, first_line
from fer_core.metric_names import CLASSIFICATION_METRICS, SELECT_METRICS

if TYPE_CHECKING:
    import optuna


def _fmt(v: float) -> str:
    return "  -  " if v != v else f"{v:.3f}"  # NaN (class absent) shows as a dash

def per_class_table(result: dict, title: str) -> Table:
    names, counts = result["class_names"], result["train_counts"]
    val, test = result["val"], result["test"]
    tail = set(result["groups"].get("tail", []))
    table = Table(title=title)
    for col in ("#", "class", "train n", "val F1", "val P", "val R", "test F1", "test n"):
        table.add_column(col, justify="right" if col not in ("class",) else "left")
    for c, name in enumerate(names):
        table.add_row(
            str(c), name + (" (tail)" if c in tail else ""), str(counts[c]),
            _fmt(val["f1"][c]), _fmt(val["precision"][c]), _fmt(val["recall"][c]),
            _fmt(test["f1"][c]), str(test["support"][c]),
        )
    return table

def cmd_train(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fer_core.config import build_config

    sets = list(args.set or [])
    if args.data:  # as launch's --data: the kind detected as `data inspect` does; a later --set dataset= wins
        from fer_core.data.inspect import detect_source

        path = Path(args.data).expanduser().resolve()
        # the path as a quoted YAML string: --set values are read as YAML, where ' #' starts a comment
        sets = [f"dataset={detect_source(path)}", f"data_path={json.dumps(str(path))}", *sets]
    cfg = build_config(args.config, sets)  # a bad config is refused before torch and timm load (~3 s)
    from fer_core.data.sources import dataset_for
    from fer_core.train import train_fer

    console.print(f"[bold]config[/]: loss={cfg.loss} sampler={cfg.sampler} backbone={cfg.backbone} "
                  f"img_size={cfg.img_size} epochs={cfg.epochs} seed={cfg.seed} dataset={cfg.dataset}")
    with console.status("loading data (decoded once, then cached)..."):
        ds = dataset_for(cfg)
    console.print(f"data: {len(ds.labels)} images, fingerprint {ds.fingerprint[:12]}, "
                  f"{'from cache' if ds.info.get('from_cache') else 'decoded'}")
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("{task.fields[msg]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task("train", total=cfg.epochs, msg="")

        def report(m: dict, checkpoint: dict | None = None) -> None:
            progress.update(task, advance=1, msg=f"loss {m['loss']:.3f} val macro-F1 {m['macro_f1']:.3f} "
                                                 f"(best {m['best_macro_f1']:.3f} @ {m['best_epoch']})")

        result = train_fer(cfg, report, dataset=ds)
    val, test = result["val"], result["test"]
    console.print(per_class_table(result, f"per-class F1 (selected epoch {result['best_epoch']})"))
    summary = Table(title="summary")
    for col in ("split", "macro-F1", "accuracy", "balanced acc", "head F1", "medium F1", "tail F1"):  # CLASSIFICATION_METRICS
        summary.add_column(col, justify="right")
    for name, m in (("val", val), ("test", test)):
        summary.add_row(name, *(_fmt(m[k]) for k in CLASSIFICATION_METRICS))
    console.print(summary)
    console.print(f"validation macro-F1 {val['macro_f1']:.4f} | test macro-F1 {test['macro_f1']:.4f} "
                  f"(selected epoch {result['best_epoch']}, {result['epochs_run']} epochs run, "
                  f"{result['seconds']:.0f} s on {result['device']})")
    console.print(f"weights: {result['weights']}", highlight=False)  # a file: what was loaded, missing, left over
    if "au_f1_tuned" in test:  # AU thresholds chosen on validation, applied to test
        console.print(f"AUs: test macro-F1 {test['au_f1']:.4f} at 0.5, {test['au_f1_tuned']:.4f} at the validation "
                      f"thresholds; macro AUC {test['au_auc']:.4f}", highlight=False)
    if args.save:
        import torch

        from fer_core.checkpoint import model_payload

        try:  # --save was probed before training; this catches a disk that filled up or vanished since
            Path(args.save).expanduser().parent.mkdir(parents=True, exist_ok=True)
            torch.save(model_payload(result), Path(args.save).expanduser())  # what checkpoint.load_model reads
        except OSError as err:
            raise FerError(f"--save {args.save}: cannot write ({err.strerror or err})") from None
        console.print(f"model saved to {args.save}")
    return 0

def cmd_data_synth(args: argparse.Namespace) -> int:
    from fer_core.data.synthetic import synthesize_rafce

    out = synthesize_rafce(args.out, seed=args.seed, img_size=args.img_size)
    console.print(f"synthetic RAF-CE stand-in written to {out}")
    return 0

def cmd_data_inspect(args: argparse.Namespace) -> int:
    from fer_core.data.inspect import detect_source, format_summary, peek, summarize
    from fer_core.data.sources import load_dataset

    path = Path(args.path)
    if not path.exists():
        raise FerError(f"{path}: no such file or directory")
    kind = args.kind or detect_source(path)
    px = peek(kind, str(path))["px"]  # the first image's size as stored
    # decoded at the images' own size unless asked (it was 64 px whatever was on disk)
    size = args.img_size or (min(512, max(32, max(px))) if px else 64)
    ds = load_dataset(dataset=kind, data_path=str(path), img_size=size, cache_dir=args.cache_dir)
    console.print(format_summary({**summarize(ds), "disk_px": px}))
    return 0


def _refresh_note(study: optuna.Study, planned: int | None) -> None:
    from fer_core.report.export import refresh_note

    refresh_note(study, planned)


def _sequential_judge(study: optuna.Study):
    from fer_core.report.table import sequential_judge

    return sequential_judge(study)


def cmd_launch(args: argparse.Namespace) -> int:
    # said before the imports below (Optuna, Ray, torch: seconds): the launch has started
    console.print(f"launching {args.study}: checking the study, its data and the storage, then starting Ray; "
                  "a line per finished trial follows", highlight=False, markup=False, soft_wrap=True)
    from fer_core.study.runner import LaunchOptions, launch

    opts = LaunchOptions(storage=args.storage, address=args.address, profile=args.profile,
                         max_concurrent=args.max_concurrent, restart=args.restart,
                         warm_start=tuple(args.warm_start or ()), artifacts=args.artifacts, runs_dir=args.runs_dir,
                         quiet=not args.verbose, note=_refresh_note, data=args.data, sets=tuple(args.set or ()),
                         judge=_sequential_judge)
    summary = launch(args.study, opts)
    for line in summary.get("warm_start", []):
        console.print(line, highlight=False, soft_wrap=True)
    if summary["reconciled"]:
        console.print(f"reconciled {len(summary['reconciled'])} trial(s) left RUNNING by a stopped driver: "
                      f"{summary['reconciled']} (failed and re-queued)")
    console.print(f"study {summary['study']} ({summary['profile']} profile) in {summary['storage']}: "
                  f"{summary.get('COMPLETE', 0)} complete, {summary.get('PRUNED', 0)} pruned, "
                  f"{summary.get('FAIL', 0)} failed of {summary['planned']} planned; {summary['ran']} run now"
                  + (f", {summary['fold_skipped']} fold trials skipped by pruning across folds"
                     if summary.get("fold_skipped") else ""),
                  highlight=False)
    closing = _adequacy_closing(summary["study"], args.storage)
    if closing:
        console.print(closing, highlight=False, markup=False, soft_wrap=True)
    return 0


def _adequacy_closing(name: str, storage: str | None) -> str | None:
    """The launch's last line: whether the study can answer its question, and what to do if not (the
    report's first sentence, fer_core/report/adequacy.py); None before any trial completed."""
    from fer_core.report.export import load
    from fer_core.report.table import adequacy_line

    try:
        _, data, _ = load(name, storage)
    except FerError:
        return None
    return adequacy_line(data).replace("**", "")


def cmd_confirm(args: argparse.Namespace) -> int:
    from fer_core.study.confirm import write_confirm_study
    from fer_core.study.storage import load_stored_study, storage_url

    study = load_stored_study(args.study, storage_url(args.storage))
    path = write_confirm_study(study, args.top, args.seeds, args.out)
    console.print(f"{path}: the top {args.top} configs of {args.study} by validation, on {args.seeds} fresh seeds",
                  highlight=False)
    if args.no_launch:
        return 0
    # the written study carries the source's data and overrides in its base; the caller's args stay as parsed
    return cmd_launch(argparse.Namespace(**{
        **vars(args), "study": str(path), "restart": False, "warm_start": None,
        "profile": args.profile or (study.user_attrs.get("spec") or {}).get("profile")}))


def cmd_report(args: argparse.Namespace) -> int:
    from fer_core.report.export import FORMATS, report

    formats = FORMATS if "all" in args.format else tuple(dict.fromkeys(args.format))
    out = report(args.study, storage=args.storage, formats=formats, out=args.out, artifacts=args.artifacts)
    for line in out["warnings"]:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(out["status"], highlight=False, soft_wrap=True)
    if "md" in formats and not args.quiet:
        console.print(out["markdown"], highlight=False, markup=False, soft_wrap=True)  # no wrapped table rows
    console.print(f"report written to {out['out']}: " + ", ".join(Path(f).name for f in out["files"]), highlight=False)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna
    import optuna_dashboard

    from fer_core.study.artifacts import ENV, STORE_ATTR, FallbackStore, artifact_dir, open_store
    from fer_core.study.storage import open_existing_storage, redact, storage_url

    url = storage_url(args.storage)
    storage = open_existing_storage(url)
    if args.artifacts or os.environ.get(ENV):  # said now: made if missing (a fresh compose: before the driver)
        store = open_store(artifact_dir(url, args.artifacts))
        shown = str(artifact_dir(url, args.artifacts))
    else:  # the stores the studies' launches recorded (one server shows every study of the storage)
        recorded = [s.user_attrs.get(STORE_ATTR) for s in optuna.get_all_study_summaries(storage, False)]
        dirs = [Path(d) for d in dict.fromkeys(recorded) if isinstance(d, str)] or [artifact_dir(url)]
        missing = [d for d in dirs if not d.is_dir()]
        if missing:
            err_console.print(f"warning: no artifact store at {', '.join(map(str, missing))}: the dashboard shows "
                              "no confusion matrices or per-class reports of those trials (pass --artifacts DIR)",
                              markup=False, highlight=False, soft_wrap=True)
        stores = [s for s in (open_store(d, create=False) for d in dirs if d.is_dir()) if s is not None]
        store = FallbackStore(stores[0].path, stores[1:]) if stores else None  # None: no artifact pages
        shown = ", ".join(str(s.path) for s in stores) or "none"
    host = "[" + args.host + "]" if ":" in args.host else args.host
    console.print(f"optuna-dashboard on {redact(url)} (artifacts: {shown}): http://{host}:{args.port}/dashboard/",
                  highlight=False)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"warning: listening on {args.host}: anyone who can reach this address sees the study",
                          markup=False)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=store)
    except OSError as err:
        raise FerError(f"--port {args.port}: cannot listen on {args.host}:{args.port} ({err.strerror or err})") from None
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from fer_core.study.spec import check_data, check_heads, check_weights_here, load_study

    spec = load_study(args.study, args.profile, args.data, dict(args.set or ()))
    # the data as the trials will read it, checked as the launch checks it (classes, splits, every image's
    # header); a variant needing absent AU labels stops here
    data = check_data(spec, headers=True)
    check_heads(spec)  # a token backbone under a spatial head stops here too
    for line in plan_lines(spec, data):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if any(d["where"] for d in data):
        from fer_core.data.inspect import NOT_CHECKED

        console.print(f"  data checked: classes, splits and every image's header; not checked: {NOT_CHECKED}",
                      highlight=False, soft_wrap=True, markup=False)
    try:  # a property of this machine, not of the file: a note here, the launch stops on it
        check_weights_here(spec)
    except ConfigError as err:
        console.print(f"note: a launch here would stop: {err}", highlight=False)
    return 0


# train_fer fp32 images/s at 64 px on the benchmark machine (2-core AMD EPYC, batch 64): benchmarks/RESULTS.md,
# "Is the trainable faster than a plain PyTorch loop?". validate's time estimate scales them by pixel count; a rough guide, not a promise
CPU_IMAGES_PER_S = {"test_resnet": 1083.0, "mobilenetv3_small_100": 669.0, "resnet10t": 271.0}
TRIAL_OVERHEAD_S, LAUNCH_OVERHEAD_S = 2.0, 10.0  # per trial (worker, storage, artifacts); Ray's start and stop
EVAL_COST = 1 / 3  # a validation/test image costs about a third of a training image (forward only)


def estimate_seconds(spec, data: list[dict]) -> tuple[float | None, str]:
    """A rough wall-clock estimate of the whole study and what it is based on (``validate``'s plan):
    per trial, epochs x (training images + a third of the evaluated ones) / the backbone's measured
    CPU images/s scaled to the image size, plus fixed overheads; trials share the CPU, so concurrency
    does not divide it. None when the backbone has no measured throughput."""
    cfgs = [p.resolved for p in spec.planned]
    n = spec.n_planned() or len(cfgs)
    c = cfgs[0]
    rate = CPU_IMAGES_PER_S.get(c.backbone)
    basis = (f"{c.backbone} at {rate:.0f} img/s (64 px, 2-core CPU, benchmarks/RESULTS.md) scaled to {c.img_size} px, "
             f"+{TRIAL_OVERHEAD_S:.0f} s per trial and {LAUNCH_OVERHEAD_S:.0f} s to start; a GPU or more cores "
             "is faster") if rate else f"no estimate: no measured throughput for backbone {c.backbone}"
    if rate is None or not data:
        return None, basis
    d = data[0]
    train = sum(d["train_counts"])
    evaluated = max(0, d.get("n_images", train) - train)
    epochs = sum(x.epochs + (x.stage2_epochs if x.stage2 != "none" else 0) for x in cfgs) / len(cfgs)
    per_trial = epochs * (train + EVAL_COST * evaluated) / (rate * (64 / c.img_size) ** 2) + TRIAL_OVERHEAD_S
    total = LAUNCH_OVERHEAD_S + n * per_trial
    return (min(total, spec.time_s) if spec.time_s else total), basis


def sequential_lines(spec) -> list[str]:
    """``design.sequential``'s plan: the looks, and the trainings at most and expected with no effect
    and with min_effect in every row (a quick simulation of the procedure on z statistics,
    ``sequential.expected_trainings``: it assumes min_effect is what the maximum seeds detect with
    80 % power, as a design powered for it would)."""
    from fer_core import sequential

    plan = spec.sequential
    rows = len({c.variant for c in spec.cells()}) - 1
    looks = ", ".join(f"{n} seeds {list(spec.seeds[:n])}" if i == 0 else f"{n}" for i, n in enumerate(plan.looks))
    none = sequential.expected_trainings(plan, rows, 0, studies=300)
    every = sequential.expected_trainings(plan, rows, rows, studies=300)
    return [f"  sequential: looks at {looks} (the first n seeds each; the baseline runs every look); a row "
            f"stops when decided or, from look 2, when its conditional power to detect |Δ| >= {plan.min_effect:g} "
            f"falls below {plan.futility_power:g} (alpha spending: Lan-DeMets O'Brien-Fleming, Holm across the {rows} rows)",
            f"    trainings: at most {none['maximum']:.0f} (the fixed design at {plan.max_seeds} seeds); expected "
            f"~{none['expected']:.0f} with no effect in any row, ~{every['expected']:.0f} with |Δ| = min_effect in "
            "every row (simulated, z statistics, min_effect taken as what the maximum seeds detect with 80 % "
            "power)"]


def plan_lines(spec, data: list[dict] | None = None) -> list[str]:
    """What ``validate`` prints: the verdict, then the plan (variants, seeds, data, backbone, selection,
    estimated time). ``data``: ``check_data``'s summaries of the sources the trials read."""
    from fer_core.config import TrainConfig

    n = spec.n_planned()
    base = {**{k: f.default for k, f in TrainConfig.model_fields.items()}, **spec.base}  # what a trial trains with
    lines = [f"{spec.source}: study {spec.name!r} is valid ({spec.design}, profile {spec.profile}): "
             + (f"{'at most ' if spec.sequential is not None else ''}{n} trials planned" if n is not None
                else f"{spec.trials} search trials")]
    if spec.question:
        lines.append(f"  question: {spec.question}")
    if spec.design == "one_at_a_time":
        names = [spec.baseline, *spec.variants]
        lines.append(f"  variants ({len(names)}, baseline first): {', '.join(names)}")
    elif spec.design == "grid":
        lines.append("  grid: " + " x ".join(f"{k} {list(v)}" for k, v in spec.factors.items()))
    else:
        keys = [p.name for p in spec.space.params if p.type != "fixed"] if spec.space is not None else []
        lines.append(f"  search: {spec.trials} trials" + (f" over {', '.join(keys)}" if keys else "")
                     + f"; optuna sampler {spec.optuna_sampler['name']}")
    dropped = (spec.resolved.get("overrides") or {}).get("dropped_variants")
    if dropped:
        lines.append(f"  left out: {', '.join(dropped)} (they train the AU head; the data given has no AU labels)")
    lines.append(f"  seeds: {list(spec.seeds)}" + (f"; {spec.cv_folds}-fold CV x {spec.cv_repeats}"
                                                   if spec.cv_folds else ""))
    if spec.sequential is not None:
        lines.extend(sequential_lines(spec))
    if data:
        for d in data:
            px = f"; images {d['px'][0]}x{d['px'][1]} px on disk" if d.get("px") else ""
            at = f"at {d['where']}" if d["where"] else "(generated in the cache)"
            lines.append(f"  data: {d['kind']} {at}: {len(d['classes'])} classes, "
                         f"{sum(d['train_counts'])} training images, AU labels: {'yes' if d['has_aus'] else 'no'}{px}")
            lines.append("    training images per class: "
                         + ", ".join(f"{name} {k}" for name, k in zip(d["classes"], d["train_counts"])))
    else:
        where = base.get("data_path")
        lines.append(f"  data: {base.get('dataset', 'synthetic')}" + (f" at {where}" if where
                                                                      else " (generated in the cache)"))
    lines.append(f"  backbone: {base.get('backbone', '?')}, {base.get('img_size', '?')} px, "
                 f"{base.get('epochs', '?')} epochs")
    from fer_core.study.plateau import short_of_plateau

    short = short_of_plateau({"dataset": "synthetic", **base})  # the baseline's recipe, against measurements
    if short:
        lines.append(f"  {short}")
    budget = f"; time budget {spec.time_s:.0f} s" if spec.time_s else ""
    lines.append(f"  objective: validation {spec.metric} ({spec.direction}); pruner {spec.pruner['name']}, "
                 f"scheduler {spec.scheduler['name']}; up to {spec.max_concurrent} trials at once{budget}")
    if data is not None:
        seconds, basis = estimate_seconds(spec, data)
        lines.append(f"  estimated time: ~{seconds / 60:.1f} min ({basis})" if seconds is not None
                     else f"  estimated time: {basis}")
    return lines


def cmd_studies(args: argparse.Namespace) -> int:
    import optuna

    from fer_core.study.queries import STATES
    from fer_core.study.storage import open_existing_storage, redact, storage_url
    from fer_core.study.studyfile import search_dirs
    from fer_core.study.warmstart import is_warm_start

    files = Table(title="study files")
    files.add_column("name")
    files.add_column("file")
    seen = set()
    for d in search_dirs("studies"):
        for f in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            if f.stem not in seen:
                seen.add(f.stem)
                files.add_row(f.stem, str(f))
    console.print(files)
    url = storage_url(args.storage)
    storage = open_existing_storage(url)  # a missing SQLite file: one line, and none is created
    stored = Table(title=f"stored studies in {redact(url)}")
    for col in ("study", *STATES, "warm-start", "best"):
        stored.add_column(col, justify="left" if col == "study" else "right")
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        trials = storage.get_all_trials(s._study_id, deepcopy=False)
        own = [t for t in trials if not is_warm_start(t)]  # told copies are prior evidence, not this study's
        counts = {st: sum(t.state.name == st for t in own) for st in STATES}
        values = [t.value for t in own if t.state.name == "COMPLETE" and t.value is not None]
        pick = max if len(s.directions) == 1 and s.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = f"{pick(values):.4f}" if values and len(s.directions) == 1 else "-"
        stored.add_row(s.study_name, *(str(counts[st]) for st in STATES), str(len(trials) - len(own)), best)
    console.print(stored)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fer_core.study.queries import best_value, counts_by_state
    from fer_core.study.storage import load_stored_study, planned_trials, redact, storage_url
    from fer_core.study.warmstart import warm_started

    url = storage_url(args.storage)
    study = load_stored_study(args.study, url)
    c = counts_by_state(study)
    spec = study.user_attrs.get("spec", {})
    planned = planned_trials(study)
    best, num = best_value(study)
    console.print(f"study {args.study} in {redact(url)} (profile {spec.get('profile', '?')}, "
                  f"design {study.user_attrs.get('design', '?')})", highlight=False)
    told = warm_started(study)
    if told:
        console.print("warm start: " + ", ".join(f"{n} trials told from {src}" for src, n in sorted(told.items()))
                      + " (prior evidence: not counted, never best)", highlight=False)
    # design.sequential: the plan is the maximum; rows stop as they are decided (fer-study report: which, why)
    most = "at most " if (spec.get("design") or {}).get("sequential") and planned is not None else ""
    console.print(f"progress: {c['COMPLETE'] + c['PRUNED']}/{most}{planned if planned is not None else '?'} finished | "
                  + " ".join(f"{k.lower()} {v}" for k, v in c.items()), highlight=False)
    if best is not None:
        t = study.trials[num]
        label = t.user_attrs.get("variant") or t.params
        console.print(f"best so far: {study.user_attrs.get('metric', 'value')} {best:.4f} (trial {num}: {label})",
                      highlight=False)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from fer_core.report.ensemble import build_ensemble, save_ensemble
    from fer_core.report.export import refresh_note
    from fer_core.report.table import study_groups
    from fer_core.study.artifacts import open_store, study_artifact_dir
    from fer_core.study.storage import load_stored_study, planned_trials, storage_url

    url = storage_url(args.storage)
    study = load_stored_study(args.study, url)
    where = study_artifact_dir(study, url, args.artifacts)
    store = open_store(where, create=False)
    if store is None:  # an ensemble averages the stored probabilities: nothing to do without them
        raise FerError(f"no artifact store at {where}: an ensemble needs the trials' stored probabilities; "
                       "pass --artifacts DIR (the launch's store)")
    groups = study_groups(study.user_attrs.get("spec") or {}, list(study.user_attrs.get("class_counts") or []))
    entry = build_ensemble(study, store, args.top, by=args.by, diverse=args.diverse, name=args.name, groups=groups,
                           tta=args.tta)
    key = save_ensemble(study, entry)
    try:  # the dashboard note shows the ensemble row too; a note is a convenience
        refresh_note(study, planned_trials(study))
    except Exception as err:
        err_console.print(f"warning: study note not refreshed: {first_line(err, repr(err))}",
                          markup=False)
    names = study.user_attrs.get("class_names") or [str(c) for c in range(len(entry["val"]["f1"]))]
    table = Table(title=f"ensemble {entry['name']}: trials {entry['members']} (by val {entry['by']})")
    for col in ("#", "class", "val F1", "test F1"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, name in enumerate(names):
        table.add_row(str(c), name, _fmt(entry["val"]["f1"][c]), _fmt(entry["test"]["f1"][c]))
    console.print(table)
    if entry["skipped_without_probabilities"]:
        console.print(f"skipped (no stored probabilities): trials {entry['skipped_without_probabilities']}",
                      highlight=False)
    if len(entry["members"]) < args.top:  # fewer than asked: say so, an ensemble of 2 is not the top-3 one
        console.print(f"note: --top {args.top} asked for {args.top} members; only {len(entry['members'])} complete "
                      "trial(s) with stored probabilities were usable", highlight=False)
    console.print(f"ensemble of {len(entry['members'])} trials: validation macro-F1 {entry['val']['macro_f1']:.4f} "
                  f"(best member {max(entry['member_values']):.4f}), test macro-F1 {entry['test']['macro_f1']:.4f}; "
                  f"stored as study user attr {key!r} (derived: not a trial)", highlight=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fer_core.study.artifacts import study_artifact_dir
    from fer_core.study.outputs import export_trial
    from fer_core.study.storage import load_stored_study, storage_url

    url = storage_url(args.storage)
    study = load_stored_study(args.study, url)
    dest = export_trial(study, args.trial, study_artifact_dir(study, url, args.artifacts), args.out)
    console.print(f"trial {args.trial} of study {args.study} exported to {dest} (model, config, class names; "
                  "load with fer_core.checkpoint.load_model, predict with fer_core.train.predict_model)", highlight=False)
    return 0


# control characters and line separators a file name, URL or YAML value may carry into a message: escaped,
# so the error stays one line (and a name cannot move the cursor or fake a second line)
_CONTROL = {c: repr(chr(c))[1:-1] for c in (*range(0x20), 0x7F, 0x85, 0x2028, 0x2029) if c != 0x09}


def _printable(text: str) -> str:
    """``text`` with lone surrogates (what undecodable argv bytes become) as ``\\udcff`` escapes: a strict
    stderr (a capture, PYTHONIOENCODING=utf-8:strict) must not turn the one error line into a traceback;
    control characters and line breaks escaped too (``_CONTROL``)."""
    return text.translate(_CONTROL).encode("utf-8", "backslashreplace").decode("utf-8")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ...``, exit 2) like every other bad input."""

    def error(self, message: str):  # type: ignore[override]
        err_console.print(_printable(f"error: {self.prog}: {message} (see {self.prog} --help)"), markup=False,
                          highlight=False, soft_wrap=True)
        raise SystemExit(2)


def _version() -> str:
    """The installed distribution's version (what pip sees), else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fer-study")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from fer_core import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="fer-study", description="FER imbalance ablation and HPO studies")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                   help="print fer-study's version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run one training trial and print per-class metrics")
    t.add_argument("--config", metavar="FILE", help="flat YAML config (keys: see fer_core/config.py); defaults are embedded")
    t.add_argument("--data", type=existing_path, metavar="PATH",
                   help="your data, as for launch: a published FER release, a manifest CSV or class folders (the kind "
                        "detected as `data inspect` does; --set dataset=KIND forces one) (default: the config's data)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable; default: none)")
    # checked before training: a directory or an unwritable path would lose the trained model
    t.add_argument("--save", type=out_file, metavar="FILE",
                   help="write the selected epoch's model, config and class names to this file "
                        "(default: not saved)")
    t.set_defaults(func=cmd_train)

    artifacts_help = ("artifact store directory (default: $FER_STUDY_ARTIFACTS, else beside the SQLite file, "
                      "else ./fer-study-artifacts)")
    recorded_help = ("artifact store directory (default: the one recorded in the study at launch, else "
                     "$FER_STUDY_ARTIFACTS, else beside the SQLite file, else ./fer-study-artifacts)")
    storage_help = "SQLAlchemy URL (default: $FER_STUDY_STORAGE, else sqlite:///fer-study.db in the working dir)"
    profile_help = "budget profile (default: $FER_STUDY_PROFILE, else gpu if CUDA, else cpu)"
    la = sub.add_parser("launch", help="run (or continue) a study: Ray Tune trials into an Optuna study")
    la.add_argument("study", help="a name in studies/ or a path to a study YAML")
    la.add_argument("--storage", metavar="URL", help=storage_help)
    launch_cluster(la)
    la.add_argument("--profile", choices=["smoke", "cpu", "gpu"], help=profile_help)
    g = la.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", default=True, help="continue a stored study (default)")
    g.add_argument("--restart", action="store_true", help="delete the stored study and start over")
    runs_help = "Ray checkpoints (default: $FER_STUDY_RUNS, else ~/.cache/fer-study/runs)"
    la.add_argument("--runs-dir", type=out_dir, metavar="DIR", help=runs_help)
    la.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    la.add_argument("--artifacts", metavar="DIR", help=artifacts_help)
    la.add_argument("--warm-start", action="append", metavar="OTHER_STUDY",
                    help="search designs: first tell this study the complete and pruned trials of OTHER_STUDY in "
                         "the same storage (repeatable), so TPE starts informed. Only trials that trained exactly "
                         "like this study (same data, backbone, image size, epochs, ...; only searched keys and "
                         "the seed may differ) are told, the rest are skipped with the reason; the copies keep "
                         "their source and its epochs in user attrs, use no trial budget, never rank as best, "
                         "and a relaunch never tells them twice (default: none)")
    overrides(la)
    la.set_defaults(func=cmd_launch)

    co = sub.add_parser("confirm", help="re-train a study's top configs (chosen on validation) on fresh seeds as "
                                        "a new study STUDY-confirm, judged on held-out data against the baseline")
    co.add_argument("study", help="a stored study (usually a search)")
    co.add_argument("--top", type=int_range(1, 50), default=3, metavar="K",
                    help="how many configs, best validation value first, 1..50 (default 3)")
    co.add_argument("--seeds", type=int_range(2, 100), default=5, metavar="N",
                    help="fresh seeds per config, none used by the study, 2..100 (default 5)")
    co.add_argument("--out", type=out_dir, metavar="DIR",
                    help="directory the confirmation study file is written to (default: ./confirm)")
    co.add_argument("--no-launch", action="store_true", help="only write the study file")
    co.add_argument("--storage", metavar="URL", help=storage_help)
    launch_cluster(co)
    # a confirmation trains like the study it confirms, so $FER_STUDY_PROFILE does not apply
    co.add_argument("--profile", choices=["smoke", "cpu", "gpu"],
                    help="budget profile (default: the confirmed study's; $FER_STUDY_PROFILE does not apply)")
    co.add_argument("--runs-dir", type=out_dir, metavar="DIR", help=runs_help)
    co.add_argument("--artifacts", metavar="DIR", help=artifacts_help)
    co.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    overrides(co)
    co.set_defaults(func=cmd_confirm)

    va = sub.add_parser("validate", help="resolve a study file and every planned config; train nothing")
    va.add_argument("study", help="a name in studies/ or a path to a study YAML")
    va.add_argument("--profile", choices=["smoke", "cpu", "gpu"], help=profile_help)
    overrides(va)
    va.set_defaults(func=cmd_validate)

    ss = sub.add_parser("studies", help="study files and stored studies with trial counts by state")
    ss.add_argument("--storage", metavar="URL", help=storage_help)
    ss.set_defaults(func=cmd_studies)

    st = sub.add_parser("status", help="progress, best so far and per-state counts of a stored study")
    st.add_argument("study", help="a stored study's name (see fer-study studies)")
    st.add_argument("--storage", metavar="URL", help=storage_help)
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="the ablation table of a stored study (md, csv, tex, html) with plots")
    rp.add_argument("study", help="a stored study's name (see fer-study studies)")
    rp.add_argument("--storage", metavar="URL", help=storage_help)
    rp.add_argument("--format", nargs="+", default=["all"], choices=["md", "csv", "tex", "html", "all"],
                    help="one or more of md, csv, tex, html (default: all)")
    rp.add_argument("--out", type=out_dir, metavar="DIR", help="directory the report files are written to "
                                                                "(default: reports/STUDY)")
    rp.add_argument("--artifacts", metavar="DIR", help=recorded_help)
    rp.add_argument("--quiet", action="store_true", help="do not print the Markdown table")
    rp.set_defaults(func=cmd_report)

    en = sub.add_parser("ensemble", help="average the stored probabilities of a study's best trials; store it as "
                                         "a derived entry")
    en.add_argument("study", help="a stored study's name (see fer-study studies)")
    en.add_argument("--top", type=int_range(1, 1000), default=5, metavar="K",
                    help="members: the best K complete trials, 1..1000 (default 5)")
    en.add_argument("--by", default="macro_f1", choices=SELECT_METRICS,
                    help="validation metric that ranks the trials (default macro_f1)")
    en.add_argument("--diverse", action="store_true", help="at most one trial per config (differ in recipe, "
                                                            "not only in seed)")
    en.add_argument("--tta", action="store_true", help="average the members' test-time-augmented probabilities "
                                                        "(trials run with tta: flip or multi_crop)")
    en.add_argument("--name", help="entry name (default: top<K>-<by>[-diverse][-tta]); the same name replaces it")
    en.add_argument("--storage", metavar="URL", help=storage_help)
    en.add_argument("--artifacts", metavar="DIR", help=recorded_help)
    en.set_defaults(func=cmd_ensemble)

    ex = sub.add_parser("export", help="write a kept trial's model with its config and class names, for inference")
    ex.add_argument("study", help="a stored study's name (see fer-study studies)")
    ex.add_argument("--trial", type=int_range(0, 10**9), required=True, metavar="N",
                    help="trial number (its checkpoint must be kept)")
    ex.add_argument("--out", type=out_file, metavar="FILE",
                    help="file the model is written to (default: ./STUDY-trial-N.pt)")
    ex.add_argument("--storage", metavar="URL", help=storage_help)
    ex.add_argument("--artifacts", metavar="DIR", help=recorded_help)
    ex.set_defaults(func=cmd_export)

    db = sub.add_parser("dashboard", help="optuna-dashboard on the storage, with the artifact store")
    db.add_argument("--storage", metavar="URL", help=storage_help)
    db.add_argument("--host", type=host, default="127.0.0.1",
                    help="bind address (default 127.0.0.1: this machine only)")
    db.add_argument("--port", type=port, default=8080, metavar="PORT", help="1..65535 (default 8080)")
    db.add_argument("--artifacts", metavar="DIR", help="artifact store directory (default: the one each study recorded at "
                                          "launch, else as for launch)")
    db.set_defaults(func=cmd_dashboard)

    d = sub.add_parser("data", help="data set tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="render the synthetic RAF-CE stand-in in the RAF-CE on-disk format")
    s.add_argument("--out", type=out_dir, required=True, metavar="DIR",
                   help="directory the data set is written to (made if missing)")
    s.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, metavar="N", help="0..4294967295 (default 0)")
    s.add_argument("--img-size", type=int_range(48, 224), default=64, metavar="PX", help="48..224 (default 64)")
    s.set_defaults(func=cmd_data_synth)
    i = dsub.add_parser("inspect", help="per-split class counts, AU frequencies and AU-label quirks")
    i.add_argument("path", help="a RAF-CE, RAF-DB, FER2013/FER+, AffectNet, ExpW or CK+ release, a manifest CSV or "
                                "a folder of class folders (docs/data-formats.md)")
    i.add_argument("--kind", choices=sorted(set(DATASET_NAMES) - set(GENERATED)),
                   help="source kind (default: detected from the path; train, launch and validate take --data PATH "
                        "and force a kind with --set dataset=KIND)")
    i.add_argument("--img-size", type=int_range(32, 512), metavar="PX",
                   help="decode size, 32..512 (default: the first image's size on disk, else 64)")
    i.add_argument("--cache-dir", type=out_dir, metavar="DIR",
                   help="decoded-image cache (default: $FER_STUDY_CACHE, else ~/.cache/fer-study)")
    i.set_defaults(func=cmd_data_inspect)
    return p


def launch_cluster(parser: argparse.ArgumentParser) -> None:
    """``--address`` and ``--max-concurrent``: where and how wide a launch runs (launch, confirm)."""
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--max-concurrent", type=int_range(1, 10_000), metavar="N",
                        help="trials at once, 1..10000 (default: the study's budget)")


def overrides(parser: argparse.ArgumentParser) -> None:
    """``--data`` and ``--set`` (launch, validate, confirm): stored with the spec, so a relaunch must repeat
    them."""
    parser.add_argument("--data", type=existing_path, metavar="PATH",
                        help="your data: a published FER release, a manifest CSV or class folders (the kind detected "
                             "as `data inspect` does; --set dataset=KIND forces one); replaces the study's data for "
                             "every trial (default: the study's data)")
    parser.add_argument("--set", action="append", type=key_value, metavar="KEY=VALUE",
                        help="a trial-config key every trial shares (repeatable), e.g. --set epochs=20 "
                             "--set backbone=resnet18; not a key the design varies (default: none)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FerError as err:
        err_console.print(_printable(f"error: {err}"), markup=False, highlight=False, soft_wrap=True)
        return 2
    except LaunchInterrupted as err:  # finished trials are stored, the interrupted ones re-queued
        err_console.print(str(err), markup=False, highlight=False, soft_wrap=True)
        return err.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130

def console_main() -> None:
    """The ``fer-study`` entry point: ``main()``, then a quick exit.

    A command that returns has finished its work: a launch has flushed every storage write
    and artifact. What is left is Ray's shutdown (its node processes must not outlive us)
    and the interpreter's teardown of torch, timm and Ray modules, ~1.7 s of nothing per
    launch; os._exit skips the latter.
    """
    rc = main()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    console_main()
