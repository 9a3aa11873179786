"""``fer-study launch``: a study spec -> Ray Tune trials -> an Optuna study in storage.

The driver (this process) loads each data set once and shares it with the trials
through the Ray object store, runs the Tune controller with our searcher bridge, and is
the only process that writes the storage.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import fer_core
from fer_core.console import console
from fer_core.data.dataset import FerDataset
from fer_core.errors import ConfigError, FerError, LaunchInterrupted, first_line
from fer_core.study import looks
from fer_core.study.artifacts import STORE_ATTR, open_store, study_artifact_dir
from fer_core.study.bridge import (
    BridgeCallback,
    LaunchStopper,
    NoteFn,
    OptunaBridge,
    OptunaPrunerScheduler,
)
from fer_core.study.claims import DRIVER_ATTR, driver_id, reconcile
from fer_core.study.components import make_optuna_sampler, make_pruner, make_scheduler
from fer_core.study.looks import JudgeFn, next_look
from fer_core.study.outputs import real_trials
from fer_core.study.queries import best_value, counts_by_state, left_to_run
from fer_core.study.spec import StudySpec, check_data, check_heads, check_weights_here, load_study
from fer_core.study.storage import (
    StorageError,
    StorageUnwritable,
    claim_key,
    claim_lock,
    open_storage,
    redact,
    redact_text,
    spec_attrs,
    storage_url,
    write_refused,
)
from fer_core.study.teachers import resolve_teacher
from fer_core.study.warmstart import WarmStart, is_warm_start
from fer_core.study.warmstart import check_names as check_warm_start
from fer_core.study.warmstart import plan as plan_warm_start
from fer_core.study.warmstart import tell as tell_warm_start

log = logging.getLogger("fer_study")


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(fer_core.__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{fer_core.__version__}+{sha}" if sha else fer_core.__version__


def open_study(spec: StudySpec, url: str, restart: bool = False, create: bool = True,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    storage = storage or open_storage(url)
    names = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if spec.name in names and restart:
        optuna.delete_study(study_name=spec.name, storage=storage)
        names.pop(spec.name)
    if spec.name in names:
        existing = optuna.load_study(study_name=spec.name, storage=storage)
        if existing.direction.name.lower() != spec.direction:
            raise ConfigError(f"study {spec.name!r} in {redact(url)} has direction {existing.direction.name.lower()}, "
                              f"the spec says {spec.direction}; refusing to merge (use --restart to discard it)")
        fp = existing.user_attrs.get("spec_fingerprint")
        if fp and fp != spec.fingerprint:
            raise ConfigError(f"study {spec.name!r} in {redact(url)} was launched from a different spec "
                              f"(profile {existing.user_attrs.get('spec', {}).get('profile')!r}); refusing to merge; "
                              "use --restart to discard it, or give the changed study another name")
    elif not create:
        raise ConfigError(f"no study {spec.name!r} in {redact(url)}")
    return optuna.create_study(
        study_name=spec.name, storage=storage, load_if_exists=True, direction=spec.direction,
        sampler=make_optuna_sampler(spec.optuna_sampler, seed=spec.seeds[0]), pruner=make_pruner(spec.pruner),
    )


def live_counts(statuses: Iterable[str]) -> dict[str, int]:
    """Trials training now and waiting for resources, as Ray Tune sees them (its trial statuses).
    Tune runs at most ``max_concurrent`` at once; the Optuna study's RUNNING state is not this count:
    a trial is RUNNING there from its claim (before Tune starts it) until its tell is stored (after
    it ended), which once showed ``running 3`` with 2 at once."""
    c = Counter(statuses)
    return {"running": c["RUNNING"], "waiting": c["PENDING"] + c["PAUSED"]}


def trial_line(t: optuna.trial.FrozenTrial, metric: str) -> str:
    """One line for a finished trial: what it trained (variant or searched params), seed, result."""
    a = t.user_attrs
    what = a.get("variant") or a.get("config_id") or " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items() if k != "seed")
    fold = f" fold {a['fold']}" if "fold" in a else ""
    seed = a.get("seed", t.params.get("seed", "?"))
    took = f" ({t.duration.total_seconds():.0f} s)" if t.duration is not None else ""
    if t.state.name == "COMPLETE":
        result = f"{metric} {t.value:.4f}"
    elif t.state.name == "PRUNED":
        result = f"pruned after epoch {t.last_step}" if t.last_step is not None else "pruned (skipped)"
    else:
        result = "failed: " + (str(a.get("error") or "").strip() or "no reason stored").splitlines()[0][:160]
    return f"trial {t.number} {what[:100]}{fold} seed {seed}: {result}{took}"


@dataclass
class Progress:
    """What a launch shows while Tune runs: a line per finished trial (variant, seed, value) and a live
    bar on a terminal (rich), or a plain progress line every 20 s otherwise (logs, pipes)."""

    study: optuna.Study
    total: int
    start_counts: dict[str, int] = field(default_factory=dict)  # by state when the launch began (set below)
    metric: str = "value"
    started: float = field(default_factory=time.time)
    last: float = 0.0
    last_line: float = 0.0
    quiet: bool = False
    tty: bool = False
    live: dict[str, int] = field(default_factory=lambda: {"running": 0, "waiting": 0})
    shown: set[int] = field(default_factory=set)  # finished trials already printed (or finished before)
    bar: Any = None  # rich.progress.Progress on a terminal, while Tune runs
    task: Any = None

    def __post_init__(self) -> None:
        before = [t for t in real_trials(self.study, states=None) if not is_warm_start(t)]
        self.start_counts = dict(Counter(t.state.name for t in before))  # counted as line() counts
        self.shown = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}

    def __getstate__(self) -> dict:  # the live bar holds a thread: never pickled with Tune's state
        return {**self.__dict__, "bar": None, "task": None}

    def start(self) -> None:
        if self.quiet or not self.tty:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[msg]}"), TimeElapsedColumn(), console=console)
        self.task = self.bar.add_task("trials", total=self.total, msg="starting")
        self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def line(self, trials: list | None = None) -> tuple[int, str]:
        """Trials done (complete + pruned) and the progress text after the bar (or the whole line)."""
        trials = trials if trials is not None else real_trials(self.study, states=None)
        c = Counter(t.state.name for t in trials if not is_warm_start(t))
        finished = sum(c[s] - self.start_counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
        best, num = best_value(self.study)
        elapsed = time.time() - self.started
        done_now = c["COMPLETE"] + c["PRUNED"]
        left = max(0, self.total - done_now)
        eta = f"{elapsed / finished * left / 60:.1f} min" if finished else "?"
        b = f"{best:.4f} (trial {num})" if best is not None else "-"
        return done_now, (f"running {self.live['running']} waiting {self.live['waiting']} | complete "
                          f"{c['COMPLETE']} pruned {c['PRUNED']} failed {c['FAIL']} | best {self.metric} {b} | "
                          f"ETA {eta}")

    def __call__(self, tune_trials: list | None = None, force: bool = False) -> None:
        if tune_trials is not None:
            self.live = live_counts(t.status for t in tune_trials)
        now = time.time()
        if self.quiet or (not force and now - self.last < 2):  # reads the storage: not every controller step
            return
        self.last = now
        try:
            trials = real_trials(self.study, states=None)
            for t in trials:
                if t.state.is_finished() and t.number not in self.shown and not is_warm_start(t):
                    self.shown.add(t.number)
                    console.print(trial_line(t, self.metric), highlight=False, markup=False, soft_wrap=True)
            done, text = self.line(trials)
        except Exception as err:  # a progress line is a convenience: an unreachable database only skips it
            console.print(f"progress unavailable: {redact_text(first_line(err, repr(err)))}", highlight=False)
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=done, msg=text)
        elif force or now - self.last_line >= 20:
            self.last_line = now
            console.print(f"trials {done}/{self.total}: {text} | elapsed {(now - self.started) / 60:.1f} min",
                          highlight=False, markup=False)


def _datasets(spec: StudySpec, configs: list[dict[str, Any]]) -> dict[tuple, FerDataset]:
    from fer_core.config import resolve_config
    from fer_core.data.sources import data_key, dataset_for

    out: dict[tuple, FerDataset] = {}
    for cfg in configs:
        key = data_key(cfg)
        if key not in out:
            out[key] = dataset_for(resolve_config(cfg, check_names=False))
    return out


def init_ray(address: str | None, quiet: bool = True) -> None:
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TB loggers per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # TUNE_MAX_PENDING_TRIALS_PG is left to Tune ("auto": max_concurrent_trials for a searcher behind
    # its ConcurrencyLimiter), so the first wave's actors start together, not one after another: it
    # was pinned to 1, and a smoke launch (3 trials, 2 at once) took ~3 s longer (benchmarks/RESULTS.md)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kw: dict[str, Any] = {"logging_level": logging.ERROR if quiet else logging.INFO, "log_to_driver": not quiet}
    if address:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise StorageError(f"cannot reach the Ray cluster at {address}: {first_line(err)}") from None
    else:
        # "local": a private Ray for this driver, even when a `ray start` cluster runs on this machine
        _ray_nodes_in_own_session()
        ray.init(address="local", include_dashboard=False, **kw)


def _ray_nodes_in_own_session() -> None:
    """Start the local Ray's processes (GCS, raylet and, through the raylet, the trial workers) each in a
    session of its own, as Ray itself does on Windows (a new process group where the kernel ties the
    children's life to ours). On Linux they share the driver's process group, so a signal to the whole
    group (``timeout``, a supervisor, ``kill -TERM -- -PGID``) killed them under the driver: it then waited
    60 s for a GCS that was gone, exited 1 and left its trials RUNNING. Alone in the group, the driver
    gets the signal its handler turns into a clean stop (finished trials kept, running ones re-queued,
    exit 143); the node processes still die with the driver (Ray's PR_SET_PDEATHSIG, set after setsid)."""
    if sys.platform == "win32":
        return
    from ray._private import services

    base = services.ConsolePopen
    if getattr(base, "fer_own_session", False):
        return

    class OwnSession(base):  # type: ignore[misc, valid-type]
        fer_own_session = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["start_new_session"] = True
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSession


class RayStart:
    """``ray.init`` on a background thread, so the node processes start while the driver decodes
    the data and opens the study (~2 s of a launch on a laptop). ``cancel`` shuts down a Ray
    this launch started when the launch stops early: bad data, a refused spec, nothing to run."""

    def __init__(self, address: str | None, quiet: bool) -> None:
        import ray

        self.started = not ray.is_initialized()
        self.used = False  # set once Tune is about to run on it
        self.ready, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(address, quiet), name="fer-study-ray-init",
                                       daemon=True)
        self.thread.start()

    def _run(self, address: str | None, quiet: bool) -> None:
        try:
            init_ray(address, quiet)
        except BaseException as err:  # re-raised on the launching thread by wait()
            self.error = err
            return
        self.ready.set()
        # Ray starts its GCS and raylet with PR_SET_PDEATHSIG, which fires when the *thread* that
        # forked them ends, not the process: this thread must outlive the Ray it started
        if self.started:
            self.release.wait()

    def wait(self) -> None:
        while not self.ready.wait(0.1) and self.thread.is_alive():
            pass
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        import ray

        self.wait_quietly()
        if self.started and ray.is_initialized():
            ray.shutdown()
        self.release.set()

    def wait_quietly(self) -> None:
        try:
            self.wait()
        except BaseException:  # the launch is stopping for another reason already
            pass


@contextmanager
def _stop_on_signals(bridge: OptunaBridge) -> Iterator[None]:
    """While Tune runs: the first SIGINT (Ctrl-C) or SIGTERM asks it to stop (``LaunchStopper``) instead
    of leaving trials RUNNING behind a normal-looking summary; ``launch`` then stores what finished and
    re-queues what was stopped. A second signal acts at once, as it did before."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set on the main thread
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, frame: Any) -> None:
        if bridge.interrupted is None:
            bridge.interrupted = signum
        for s, handler in previous.items():
            signal.signal(s, handler)

    tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune's own SIGINT handler would replace ours
    for s in previous:
        signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def _probably_work(spec: StudySpec, storage: optuna.storages.BaseStorage, restart: bool) -> bool:
    """A look before the data are decoded: is there anything to run? Only decides whether Ray
    starts early; a wrong guess costs a Ray start (or its shutdown), never a trial."""
    if restart:
        return True
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        return True
    return left_to_run(spec, study)[1] > 0


@dataclass(frozen=True)
class LaunchOptions:
    """How to run a study: everything ``launch`` takes besides the study's name. The CLI builds
    one from the ``fer-study launch`` flags; a default is a plain local launch."""

    storage: str | None = None  # SQLAlchemy URL (None: $FER_STUDY_STORAGE, else ./fer-study.db)
    address: str | None = None  # Ray cluster (None: $RAY_ADDRESS, else a private local Ray)
    profile: str | None = None  # budget profile (None: gpu if CUDA, else cpu)
    max_concurrent: int | None = None  # trials at once (None: the study's budget)
    restart: bool = False  # delete the stored study and start over (default: resume it)
    # search designs: studies in the same storage whose finished trials are told first (study.warmstart)
    warm_start: tuple[str, ...] = ()
    artifacts: str | None = None  # artifact store directory (None: see study.artifacts.study_artifact_dir)
    runs_dir: str | None = None  # Ray checkpoints (None: $FER_STUDY_RUNS, else ~/.cache/fer-study/runs)
    quiet: bool = True  # no Ray logs, no Optuna INFO lines
    show_progress: bool = True  # the live progress line
    # called with (study, planned trials) after each finished trial to refresh the dashboard note;
    # the CLI passes the report's ``refresh_note`` (the study layer imports no report code)
    note: NoteFn | None = None
    # the user's own data and trial-config overrides (``--data``, ``--set``): part of the stored spec
    data: str | None = None
    sets: tuple[tuple[str, Any], ...] = ()
    # design.sequential: the stored trials -> the report's held-out test per row, to plan each next look;
    # the CLI passes the report's ``table.sequential_judge`` (the study layer imports no report code)
    judge: JudgeFn | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "warm_start", tuple(self.warm_start))
        object.__setattr__(self, "sets", tuple(self.sets))


def launch(name: str, opts: LaunchOptions | None = None) -> dict[str, Any]:
    """Run (or continue) a study to completion; returns a summary. Nothing runs when the spec,
    the storage or the cluster is not usable."""
    opts = opts or LaunchOptions()
    if opts.quiet:  # one progress line per update, not Optuna's per-trial INFO lines and experimental notices
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # 1. resolve everything cheap before touching Ray: spec, storage, teacher
    url = storage_url(opts.storage)  # an empty or non-UTF-8 URL stops before anything is decoded or written
    spec = load_study(name, opts.profile, opts.data, dict(opts.sets))
    check_data(spec)  # as validate: a variant needing AU labels the data lacks stops here, nothing stored
    dropped = (spec.resolved.get("overrides") or {}).get("dropped_variants")
    if dropped:  # --data without AU labels: those rows were left out of the plan (spec._drop_au_rows)
        console.print(f"left out: {', '.join(dropped)} (they train the AU head; the data given has no AU labels)",
                      highlight=False, markup=False, soft_wrap=True)
    check_heads(spec)  # as validate: a token backbone under au_attention stops here
    check_weights_here(spec)  # pretrained weights on this machine (hub cache, file): else stop before any trial
    rdb = open_storage(url)  # an unreachable database fails fast, before data is decoded
    artifacts = opts.artifacts
    spec = resolve_teacher(spec, url, artifacts, rdb)  # teacher: {study, top} -> that study's kept checkpoints
    # warm-start sources are read and mapped before anything is written: an unknown source, another
    # objective or nothing that fits stops here with one line, and the storage gets no new study
    warm: list[WarmStart] = [plan_warm_start(spec, url, s, rdb) for s in check_warm_start(spec, opts.warm_start)]
    ray_start = RayStart(opts.address, opts.quiet) if _probably_work(spec, rdb, opts.restart) else None
    try:
        return _launch(spec, url, rdb, ray_start, warm, opts)
    except FerError:
        raise
    except Exception as err:
        # a read-only SQLite file or directory, a full disk: the first write (creating the study)
        # fails deep in Optuna with a misleading "exceeding max length"; the user needs one line
        refused = write_refused(err)
        if refused is None:
            raise
        raise StorageUnwritable(f"storage {redact(url)} cannot be written ({refused}); make it writable "
                                "and relaunch") from None
    finally:
        if ray_start is not None and not ray_start.used:
            ray_start.cancel()  # stopped before Tune ran (bad data, refused spec, nothing left to run)


def max_epochs(spec: StudySpec) -> int:
    """The most epochs one planned trial reports (stage 1 plus stage 2; a search: its space's corner
    configs'), so a Ray scheduler's ``max_t`` lies past every trial's last epoch."""
    from fer_core.stages import total_epochs

    return max(total_epochs(p.resolved) for p in spec.planned)


def _run_tuner(tuner: Any, bridge: OptunaBridge) -> None:
    """``tuner.fit()``, then every finished trial's writes flushed; a lost database, a trial's input
    error or a signal become their one-line errors (finished trials kept, the rest re-queued)."""
    try:
        with _stop_on_signals(bridge):
            tuner.fit()
    except Exception:
        bridge.flush()
        if bridge.lost is not None:  # the database stayed away: one line, exit 2, relaunch continues
            raise bridge.lost from None
        raise
    bridge.flush()  # finished trials' storage writes run in the background; none may be lost
    if bridge.lost is not None:
        raise bridge.lost
    bridge.abandon()  # trials Tune stopped with the launch: FAIL, so a relaunch re-runs their cells
    if bridge.input_error is not None:  # a trial's DataError/ConfigError: one line, exit 2, not retried
        raise bridge.input_error
    if bridge.interrupted is not None:
        raise LaunchInterrupted(f"interrupted: {bridge.kept} finished trials kept; relaunch to continue",
                                bridge.interrupted)


def _launch(spec: StudySpec, url: str, rdb: optuna.storages.BaseStorage, ray_start: RayStart | None,
            warm: list[WarmStart], opts: LaunchOptions) -> dict[str, Any]:
    # every planned cell's data before the study is created or changed: bad data (a corrupt image,
    # an empty class) stops here with its one line, and the storage holds nothing half-made
    planned_cfgs = [spec.trial_config(x.params) for x in spec.cells()] or [spec.trial_config({"seed": spec.seeds[0]})]
    datasets = _datasets(spec, planned_cfgs)
    study = open_study(spec, url, restart=opts.restart, storage=rdb)

    # 2. reconcile trials a dead driver left RUNNING, work out what is left to do
    reconciled = reconcile(study)
    tell_warm_start(study, warm)  # before the first ask, so TPE's first proposal already uses them
    todo, n_todo = left_to_run(spec, study)
    seq_state = None
    if spec.sequential is not None:  # only the next look's cells (fer_core/study/looks.py)
        seq_state, todo = next_look(spec, study, opts.judge)
        n_todo = len(todo)
    n_search = n_todo if spec.design == "search" else 0
    total = spec.n_planned() or 0

    # 3. data (loaded above, once): shared with every trial through the object store
    first = next(iter(datasets.values()))
    attrs = spec_attrs(spec, list(first.class_names), first.class_counts())
    # recorded, so that report/ensemble/export/dashboard (and a relaunch) find the store without --artifacts
    store_dir = study_artifact_dir(study, url, opts.artifacts)
    attrs[STORE_ATTR] = str(store_dir)
    # under the claim lock: Optuna writes a new attr as select-then-insert, which two drivers
    # launched together would race on (a duplicate-key error for the loser)
    with claim_lock(study._storage, claim_key(spec.name)):
        for k, v in attrs.items():
            if study.user_attrs.get(k) != v:
                study.set_user_attr(k, v)
        if study.metric_names != [spec.metric]:  # optuna-dashboard names the objective, not "Objective 0"
            with warnings.catch_warnings():  # experimental in Optuna 4
                warnings.simplefilter("ignore")
                study.set_metric_names([spec.metric])
    summary = {"study": spec.name, "storage": redact(url), "profile": spec.profile, "planned": total,
               "ran": 0, "reconciled": reconciled, "warm_start": [w.line() for w in warm]}
    if seq_state is not None:
        summary["sequential"] = looks.summary(seq_state)
    if n_todo == 0:
        summary.update(counts_by_state(study))
        return summary
    at_once = opts.max_concurrent or spec.max_concurrent
    if opts.show_progress:
        console.print(f"study {spec.name}: {n_todo} trial(s) to run of {total or n_todo} planned, up to {at_once} at "
                      f"once; data {len(first.labels)} images, {len(first.class_names)} classes; starting the trials",
                      highlight=False, markup=False, soft_wrap=True)

    # 4. Ray Tune: our bridge as the searcher, pruning through the Optuna pruner or a Ray scheduler
    if ray_start is not None:
        ray_start.used = True
        ray_start.wait()  # started in the background at step 1
    else:
        init_ray(opts.address, opts.quiet)
    version = code_version()
    fps = {k: ds.fingerprint for k, ds in datasets.items()}

    def trial_attrs(config: dict) -> dict:
        from fer_core.data.sources import data_key

        return {"data_fingerprint": fps.get(data_key(config), "loaded-by-trial"), "code_version": version}

    driver = driver_id()
    study.set_user_attr(DRIVER_ATTR + driver, time.time())
    store = open_store(store_dir)
    runs = Path(opts.runs_dir or os.environ.get("FER_STUDY_RUNS") or Path.home() / ".cache" / "fer-study" / "runs")
    experiment = f"{spec.name}-{driver.replace(':', '-')}"
    t0 = time.time()
    ran = fold_skipped = 0
    look = 0
    while True:  # once; a sequential design: once per look, until every row is decided or stopped
        if seq_state is not None and opts.show_progress:
            console.print(looks.trainings_line(seq_state), highlight=False, markup=False, soft_wrap=True)
        bridge = _run_cells(spec, study, todo, n_todo, n_search, trial_attrs, driver, store, total, runs,
                            f"{experiment}-look{look}" if seq_state is not None else experiment, opts, at_once,
                            datasets)
        ran += bridge.issued
        fold_skipped += len(bridge.claims.fold_pruned)
        if seq_state is None:
            break
        tried = {c.cell_id for c in todo}
        seq_state, todo = _next_look_when_ready(spec, study, opts, driver)
        n_todo, look = len(todo), look + 1
        summary["sequential"] = looks.summary(seq_state)
        if not todo:
            break
        if {c.cell_id for c in todo} <= tried:  # the same cells again: they failed (max_failures), not judged
            console.print(f"sequential: {len(todo)} cell(s) of this look did not complete "
                          f"({', '.join(sorted(c.cell_id for c in todo)[:5])}); the next look waits for them: "
                          "relaunch to retry", highlight=False, markup=False, soft_wrap=True)
            break
    summary.update(counts_by_state(study))
    summary.update({"ran": ran, "fold_skipped": fold_skipped, "seconds": time.time() - t0})
    return summary


def _next_look_when_ready(spec: StudySpec, study: optuna.Study, opts: LaunchOptions, driver: str
                          ) -> tuple[Any, list]:
    """The next look's cells once this look's are all finished: while another live driver still runs
    some, wait (writing this driver's heartbeat); cells of a driver that died are re-queued."""
    while True:
        state, todo = next_look(spec, study, opts.judge)
        ids = {c.cell_id for c in todo}
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.user_attrs.get("cell_id") in ids]
        if not todo or len(running) < len(todo):
            return state, todo  # something this driver can claim now (or nothing left at all)
        study.set_user_attr(DRIVER_ATTR + driver, time.time())
        if reconcile(study):
            continue
        time.sleep(LOOK_POLL_S)


LOOK_POLL_S = 2.0  # a driver waiting for another's cells of the same look polls this often


def _run_cells(spec: StudySpec, study: optuna.Study, todo: list, n_todo: int, n_search: int, trial_attrs: Any,
               driver: str, store: Any, total: int, runs: Path, experiment: str, opts: LaunchOptions, at_once: int,
               datasets: dict[tuple, FerDataset]) -> OptunaBridge:
    """One Tune run over ``todo`` (or ``n_search`` search slots): the bridge as the searcher."""
    from ray import tune

    from fer_core.study.trainable import trial_function

    bridge = OptunaBridge(study, spec, todo, n_search, trial_attrs, driver, artifact_store=store, planned=total,
                          outputs_dir=str(runs.resolve() / experiment / "fer-outputs"), note=opts.note)
    if spec.pruner["name"] != "none":
        scheduler = OptunaPrunerScheduler(bridge)
    else:
        epochs = max_epochs(spec)
        mode = "max" if spec.direction == "maximize" else "min"
        # max_t past the last epoch: the trial's own final report must not look like a stop
        scheduler = make_scheduler(spec.scheduler, spec.metric, mode, epochs + 2)
    progress = Progress(study, total, metric=spec.metric, quiet=not opts.show_progress, tty=console.is_terminal)
    threads = max(1, int(spec.resources["cpu"]))
    if spec.resources["gpu"] == "auto":  # measured per backbone on the cluster's GPUs: small ones share a card
        from fer_core.study.gpu import AutoGpuResources

        resources: Any = AutoGpuResources(spec.resources["cpu"], len(next(iter(datasets.values())).labels))
    else:
        resources = {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}

    trainable = tune.with_resources(tune.with_parameters(trial_function(threads), datasets=datasets),
                                    resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=bridge, scheduler=scheduler, num_samples=n_todo,
            max_concurrent_trials=at_once, reuse_actors=True,
            time_budget_s=spec.time_s,
        ),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str(runs.resolve()), verbose=0, stop=LaunchStopper(bridge),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[BridgeCallback(bridge, progress)],
        ),
    )
    progress.start()
    try:
        _run_tuner(tuner, bridge)
        progress(force=True)  # the last finished trials' lines, after their writes landed (flush)
    finally:
        progress.stop()
    return bridge
