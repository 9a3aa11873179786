"""Where studies live: an Optuna RDB storage (SQLite file by default, PostgreSQL for teams).

Only the driver process talks to the database. Credentials never leave this module in
clear: every URL shown to a user, logged, pickled (``DriverStorage``) or stored goes through ``redact``,
which masks a user-info password and credential-like query parameters alike.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import optuna
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, InterfaceError, OperationalError, ProgrammingError

from fer_core.errors import ConfigError, FerError, first_line

DEFAULT_DB = "fer-study.db"
ENV = "FER_STUDY_STORAGE"
WAIT_ENV = "FER_STUDY_DB_WAIT_S"  # how long the driver waits for a lost database before it stops
DEFAULT_WAIT_S = 180.0
log = logging.getLogger("fer_study")
T = TypeVar("T")


class StorageError(FerError):
    """The storage cannot be reached or refuses the study."""


class StorageLost(StorageError):
    """The database went away mid-study for longer than the driver waits for it."""


class StorageUnwritable(StorageLost):
    """The database refuses writes (read-only file or directory, full disk): waiting will not help,
    so the driver stops at once; a relaunch once it is writable continues the study."""


# what SQLite and PostgreSQL say when a write cannot land (lower case); the errors they raise are
# OperationalErrors, which would otherwise read as a lost connection and be waited out
_REFUSED_WRITE = ("readonly database", "read-only", "database or disk is full", "no space left",
                  "unable to open database file", "disk i/o error", "could not extend file")
_REFUSED_PG = ("DiskFull", "ReadOnlySqlTransaction", "InsufficientPrivilege")


def write_refused(err: BaseException | None) -> str | None:
    """The database's own line when ``err`` (or what it wraps: Optuna hides SQLite's reason behind a
    StorageInternalError about "exceeding max length") is a refused write, else None."""
    seen = 0
    while err is not None and seen < 8:
        text = first_line(err, "")
        if type(err).__name__ in _REFUSED_PG or any(k in text.lower() for k in _REFUSED_WRITE):
            return redact_text(text)
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def storage_url(arg: str | None = None) -> str:
    """``--storage`` > ``$FER_STUDY_STORAGE`` > a SQLite file in the working directory."""
    if arg is not None and not arg.strip():  # an empty --storage must not quietly mean ./fer-study.db
        raise ConfigError("--storage: empty; give a database URL (e.g. sqlite:///fer-study.db) or leave the "
                          f"option out (${ENV}, else sqlite:///{DEFAULT_DB} in the working directory)")
    url = arg or os.environ.get(ENV) or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:  # undecodable argv bytes: Ray and SQLAlchemy fail on them later, mid-launch
        raise ConfigError(f"--storage: {redact_text(url)!r} is not UTF-8 text; use a path and URL in UTF-8") from None
    try:
        parsed = make_url(url)
    except ValueError:  # sqlalchemy's int() of the port; its message would repeat the URL, password and all
        raise ConfigError(f"--storage: the port in {redact_text(url)!r} is not a number "
                          "(host:PORT, 1..65535)") from None
    except ArgumentError:
        raise ConfigError(f"--storage: not a database URL: {redact_text(url)!r} (e.g. sqlite:///fer-study.db, "
                          "postgresql+psycopg://user:pass@host/db)") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"--storage: unsupported database {parsed.get_backend_name()!r}; use sqlite or postgresql")
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


# query keys that carry a credential or point at one: libpq's password, passfile, sslpassword,
# sslkey, and anything named like a secret or token (a driver's or proxy's own parameter)
_SECRET_KEY = re.compile(r"pass|secret|token|credential|sslkey|api[_-]?key|auth", re.IGNORECASE)
_USERINFO = re.compile(r"(://[^:/@\s]*:)[^\s?#]*@")  # to the last @ before the path: a raw @ in a password
_QUERY = re.compile(r"([?&;])([^=&;\s?#]+)=([^&;\s#'\"]*)")


def redact(url: str) -> str:
    """The one form a storage URL is shown, logged, pickled or stored in: a user-info password and
    every credential-like query parameter (``?password=``, ``passfile``, ``sslpassword``, ``*secret*``,
    ``*token*``) replaced by ``***``. Works on text that is not a valid URL as well."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """``redact`` for free text (exception messages, logs) that may hold a URL anywhere in it."""
    out = _USERINFO.sub(r"\1***@", str(text))
    return _QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}=***" if _SECRET_KEY.search(m.group(2)) else m.group(0),
                      out)


class DriverStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage that never pickles its URL.

    Ray Tune pickles the searcher, the scheduler and the callbacks (``tuner.pkl`` and the experiment
    state in the runs directory, a path every node mounts), and with them the study and its storage;
    Optuna's own pickle keeps the URL, password included. This one pickles as a reference (a process-
    local token and the redacted URL): unpickled in the driver that opened it (Tune's deep copies),
    it is the same live storage; elsewhere it is reopened from ``$FER_STUDY_STORAGE`` when that names
    the same database, else refused with one line.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self._fer_token = uuid.uuid4().hex
        _OPEN[self._fer_token] = self

    def __reduce__(self) -> tuple:
        return _reattach, (self._fer_token, redact(self.url))


# token -> storage this process opened; weak, so a closed study's engine is not kept alive by it
_OPEN: weakref.WeakValueDictionary[str, DriverStorage] = weakref.WeakValueDictionary()


def _reattach(token: str, shown: str) -> DriverStorage:
    """Unpickle a ``DriverStorage``: the live one of this process, or the URL the environment holds."""
    live = _OPEN.get(token)
    if live is not None:
        return live
    env = os.environ.get(ENV)
    if env and redact(storage_url(env)) == shown:
        return open_storage(storage_url(env))
    raise StorageError(f"storage {shown}: its URL is not saved with the runs (no credential is written to "
                       f"disk); set ${ENV} to it")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """RDB storage with pool_pre_ping (a restarted server's dead connections are replaced); it pickles
    without its URL (``DriverStorage``)."""
    backend = make_url(url).get_backend_name()
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}
        db = make_url(url).database
        if db and db != ":memory:":
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise StorageError(f"storage {redact(url)}: directory {parent} does not exist")
    else:
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    for attempt in range(5):
        try:
            return DriverStorage(url, engine_kwargs=engine_kwargs)
        except Exception as err:  # sqlalchemy/psycopg raise many kinds; the user needs one line
            # drivers started together on a fresh database race to create Optuna's tables (a
            # duplicate-key or already-exists error for the loser): the tables now exist, so look again
            if attempt < 4 and isinstance(err, (IntegrityError, ProgrammingError)):
                time.sleep(0.5 + attempt)
                continue
            first = redact_text(first_line(err))
            raise StorageError(f"cannot open storage {redact(url)}: {first}") from None
    raise AssertionError("unreachable")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def require_storage(url: str) -> None:
    """Refuse (one line) a SQLite URL whose file does not exist: opening it would create an empty
    database, which a read-only command (``studies``, ``status``, ``report``, ``dashboard``) must never
    leave behind in the working directory."""
    if make_url(url).get_backend_name() != "sqlite":
        return
    db = make_url(url).database
    if db and db != ":memory:" and not Path(db).expanduser().exists():
        raise StorageError(f"no storage at {redact(url)}: the database file does not exist (launch a study "
                           "first, or pass --storage)")


def open_existing_storage(url: str) -> optuna.storages.RDBStorage:
    """``open_storage`` for readers: never creates a database (``require_storage``)."""
    require_storage(url)
    return open_storage(url)


def load_stored_study(name: str, url: str, storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """An existing study (never creates one); the error lists what the storage holds. ``storage``:
    ``url`` already opened (a launch opens it once)."""
    if storage is None:
        try:  # opening would create an empty database file for a lookup that fails anyway
            require_storage(url)
        except StorageError as err:
            raise StorageError(f"no study {name!r}: {err}") from None
    storage = storage or open_storage(url)
    names = study_names(storage)
    if name not in names:
        raise FerError(f"no study {name!r} in {redact(url)}; stored: {', '.join(names) or '(none)'}")
    return optuna.load_study(study_name=name, storage=storage)


def planned_trials(study: optuna.Study) -> int | None:
    """Trials the stored study's spec plans (None for an unknown or unloadable spec)."""
    if isinstance(study.user_attrs.get("n_planned"), int):
        return study.user_attrs["n_planned"]
    from fer_core.study.spec import load_study

    spec = study.user_attrs.get("spec", {})
    try:
        return load_study(spec.get("name", study.study_name), spec.get("profile")).n_planned()
    except FerError:
        return None


def spec_attrs(spec, class_names: list[str], class_counts: list[int]) -> dict[str, Any]:
    return {
        "spec": json.loads(json.dumps(spec.resolved, default=str)),
        "spec_fingerprint": spec.fingerprint,
        "design": spec.design,
        "n_planned": spec.n_planned(),
        "metric": spec.metric,
        "class_names": list(class_names),
        "class_counts": list(class_counts),
    }


def _connection_lost(err: BaseException) -> bool:
    """A dropped or refused connection (server restart, network blip, SQLite busy), not bad data.
    Optuna wraps SQLAlchemy's errors in StorageInternalError; the cause tells them apart."""
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, (OperationalError, InterfaceError)):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def wait_budget() -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        raise ConfigError(f"${WAIT_ENV}: expected a number of seconds, got {os.environ[WAIT_ENV]!r}") from None


def retrying(what: str, fn: Callable[[], T], wait_s: float | None = None) -> T:
    """Run one storage operation, waiting out a lost connection for at most ``wait_s`` seconds
    (``$FER_STUDY_DB_WAIT_S``, default 180): pool_pre_ping replaces the dead connections once the
    server is back. Past the budget: ``StorageLost`` with one line (the CLI exits 2; a relaunch
    continues the study). ``fn`` must be safe to run again after a failure."""
    budget = wait_budget() if wait_s is None else wait_s
    deadline, delay, warned = time.monotonic() + budget, 0.5, False
    while True:
        try:
            return fn()
        except Exception as err:
            refused = write_refused(err)
            if refused is not None:
                raise StorageUnwritable(f"the storage refused a write while {what} ({refused}); stopped: make it "
                                        "writable and relaunch the same command to continue the study") from None
            if not _connection_lost(err):
                raise
            first = redact_text(first_line(err.__cause__ or err, ""))
            if time.monotonic() + delay > deadline:
                raise StorageLost(f"lost the database for more than {budget:.0f} s while {what} ({first}); "
                                  "stopped: relaunch the same command to continue the study") from None
            if not warned:
                log.warning("database unreachable while %s (%s): retrying for up to %.0f s", what, first, budget)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    """The RDBStorage under Optuna's per-process cache wrapper."""
    return getattr(storage, "_backend", storage)


def claim_key(study_name: str) -> str:
    """The one lock key of a study: cell and budget claims, spec attrs and warm-start tells share it."""
    return f"fer-study claim {study_name}"


@contextmanager
def claim_lock(storage: optuna.storages.BaseStorage, key: str) -> Iterator[None]:
    """Serialise "is this cell / budget slot free? then take it" across drivers of one study.

    PostgreSQL: a transaction-scoped advisory lock (released by commit, or by the server when the
    holder's connection dies, so a killed driver never leaves it held). SQLite, which only works
    on one machine anyway: an exclusive flock on a file beside the database, released by the OS
    when the process dies."""
    backend = rdb(storage)
    url = make_url(backend.url)
    if url.get_backend_name() == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        with backend.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})
            yield
        return
    db = url.database
    if not db or db == ":memory:":
        yield  # one process by construction
        return
    with open(f"{Path(db).expanduser().resolve()}.claims.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
