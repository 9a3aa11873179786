"""Where studies live: an Optuna RDB storage (SQLite file by default, PostgreSQL for teams).

Only the driver process talks to the database. Credentials never leave this module in
clear: every URL shown to a user goes through ``redact``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from fer_core.errors import ConfigError, FerError

DEFAULT_DB = "fer-study.db"
ENV = "FER_STUDY_STORAGE"


class StorageError(FerError):
    """The storage cannot be reached or refuses the study."""


def storage_url(arg: str | None = None) -> str:
    """``--storage`` > ``$FER_STUDY_STORAGE`` > a SQLite file in the working directory."""
    url = arg or os.environ.get(ENV) or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--storage: not a database URL: {redact_text(url)!r} (e.g. sqlite:///fer-study.db, "
                          "postgresql+psycopg://user:pass@host/db)") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"--storage: unsupported database {parsed.get_backend_name()!r}; use sqlite or postgresql")
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return redact_text(url)


_PW = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def redact_text(text: str) -> str:
    """Hide any ``user:password@`` in free text (exception messages, logs)."""
    return _PW.sub(r"\1***@", str(text))


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """RDB storage with pool_pre_ping (a restarted server's dead connections are replaced)."""
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
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:  # sqlalchemy/psycopg raise many kinds; the user needs one line
        first = redact_text(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        raise StorageError(f"cannot open storage {redact(url)}: {first}") from None


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_stored_study(name: str, url: str) -> optuna.Study:
    """An existing study (never creates one); the error lists what the storage holds."""
    storage = open_storage(url)
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
