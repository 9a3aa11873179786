"""Storage under load: K drivers ask/report/tell against one Optuna study, side by side.

Each driver is its own process with its own connection pool (``fer_core.study.storage.open_storage``,
the settings the service uses) and does what a fer-study driver does per trial with a trivial
objective: ``ask`` + the trial's user attrs, one ``report`` per epoch, ``tell``. All drivers start
together; every operation is timed. Afterwards the study is read back: every trial a driver told
must be stored exactly once, COMPLETE, with its value and all of its epochs (nothing lost, nothing
duplicated). PostgreSQL runs K = 1, 4, 8 drivers on a fresh database of the server; SQLite one
driver (a file database is not for concurrent drivers).

    python benchmarks/storage_load.py                   # K = 1, 4, 8 on PostgreSQL + SQLite, 40 trials x 10 epochs each
    python benchmarks/storage_load.py --tiny            # K = 1, 2, a few trials (CI)
    python benchmarks/storage_load.py --pg postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

OPS = ("ask", "report", "tell")


def driver(url: str, study_name: str, trials: int, epochs: int, barrier, out) -> None:
    import optuna

    from fer_core.study.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    rng = random.Random(os.getpid())
    lat: dict[str, list[float]] = {op: [] for op in OPS}
    told: dict[int, float] = {}
    errors = 0
    barrier.wait()
    t_start = time.perf_counter()
    for _ in range(trials):
        try:
            t0 = time.perf_counter()
            trial = study.ask()
            lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
            for k, v in {"driver": os.getpid(), "seed": 0, "cell_id": f"lr={lr:.3g}", "code_version": "load"}.items():
                trial.set_user_attr(k, v)
            lat["ask"].append(time.perf_counter() - t0)
            value = 0.0
            for epoch in range(epochs):
                value = rng.random()
                t0 = time.perf_counter()
                trial.report(value, epoch)
                lat["report"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            study.tell(trial, value)
            lat["tell"].append(time.perf_counter() - t0)
            told[trial.number] = value
        except Exception:  # counted: the point is to see whether any happen under load
            errors += 1
    out.put({"lat": lat, "told": told, "errors": errors, "seconds": time.perf_counter() - t_start})


def run(url: str, k: int, trials: int, epochs: int) -> dict:
    import optuna

    from fer_core.study.storage import open_storage

    name = f"load-{k}-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    ctx = mp.get_context("spawn")  # fresh processes, like separate drivers
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=driver, args=(url, name, trials, epochs, barrier, out)) for _ in range(k)]
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    lat = {op: [x for r in results for x in r["lat"][op]] for op in OPS}
    told: dict[int, float] = {}
    duplicated = 0
    for r in results:
        duplicated += len(told.keys() & r["told"].keys())
        told.update(r["told"])
    stored = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)
    by_number = {t.number: t for t in stored}
    lost = sum(1 for n, v in told.items() if n not in by_number or by_number[n].value != v
               or by_number[n].state.name != "COMPLETE" or len(by_number[n].intermediate_values) != epochs)
    extra = len(stored) - len(told)  # trials in storage that no driver told (a duplicate or an orphan)
    wall = max(r["seconds"] for r in results)
    return {"k": k, "trials": len(told), "wall": wall, "errors": sum(r["errors"] for r in results),
            "lost": lost, "duplicated": duplicated + max(0, extra),
            "trials_s": len(told) / wall, "ops_s": sum(len(v) for v in lat.values()) / wall,
            **{f"{op}_p50": statistics.median(v) * 1e3 for op, v in lat.items() if v},
            **{f"{op}_p99": _p99(v) * 1e3 for op, v in lat.items() if v}}


def _p99(v: list[float]) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(0.99 * len(v)))]


def fresh_pg_database(admin: str) -> tuple[str, str]:
    import psycopg

    name = f"fer_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}", name


def drop_pg_database(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default=os.environ.get("FER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                    help="an admin URL of the PostgreSQL server; a fresh database is created and dropped")
    ap.add_argument("--drivers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--trials", type=int, default=40, help="trials per driver")
    ap.add_argument("--epochs", type=int, default=10, help="reports per trial")
    ap.add_argument("--tiny", action="store_true", help="K = 1, 2 with a few trials (CI)")
    args = ap.parse_args()
    if args.tiny:
        args.drivers, args.trials, args.epochs = [1, 2], 3, 3

    import optuna

    from fer_core.study.storage import redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    pg_url, db = fresh_pg_database(args.pg)
    try:
        for k in args.drivers:
            rows.append(("postgresql", run(pg_url, k, args.trials, args.epochs)))
    finally:
        drop_pg_database(args.pg, db)
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("sqlite", run(f"sqlite:///{Path(tmp) / 'load.db'}", 1, args.trials, args.epochs)))

    print(f"{args.trials} trials x {args.epochs} epochs per driver; PostgreSQL at {redact(args.pg)}, SQLite file")
    head = (f"{'storage':10s} {'K':>2s} {'trials':>6s} {'wall s':>7s} {'trials/s':>8s} {'ops/s':>7s} "
            + " ".join(f"{op + ' p50/p99 ms':>18s}" for op in OPS) + f" {'errors':>6s} {'lost':>4s} {'dup':>4s}")
    print(head)
    for backend, r in rows:
        lat = " ".join(f"{r[op + '_p50']:8.1f}/{r[op + '_p99']:<8.1f} " for op in OPS)
        print(f"{backend:10s} {r['k']:2d} {r['trials']:6d} {r['wall']:7.1f} {r['trials_s']:8.1f} {r['ops_s']:7.1f} "
              f"{lat} {r['errors']:6d} {r['lost']:4d} {r['duplicated']:4d}")
    pg = {r["k"]: r for backend, r in rows if backend == "postgresql"}
    one = pg[min(pg)]
    for k, r in sorted(pg.items()):
        if k != min(pg):
            print(f"ratio postgresql throughput K={k} / K={min(pg)}: {r['ops_s'] / one['ops_s']:.2f}x")
    sqlite = next(r for backend, r in rows if backend == "sqlite")
    print(f"ratio sqlite / postgresql throughput, one driver: {sqlite['ops_s'] / one['ops_s']:.2f}x")
    bad = [(b, r["k"]) for b, r in rows if r["errors"] or r["lost"] or r["duplicated"]]
    if bad:
        print(f"FAILED: errors, lost or duplicated trials in {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
