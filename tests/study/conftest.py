"""Real services for the study-service tests: a PostgreSQL server (never mocked) and Ray."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

PG_ADMIN = os.environ.get("FER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_admin_dsn() -> str:
    return PG_ADMIN


@pytest.fixture
def pg_url():
    """A fresh database on the real PostgreSQL server, dropped afterwards. No skip: CI starts Postgres."""
    name = f"fer_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    """Optuna-style STORAGE_MODES: each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fer-study.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the in-process launches of a module (2 CPUs: two trials at a time)."""
    import ray

    from fer_core.study.runner import init_ray

    init_ray(None)
    yield
    ray.shutdown()


@pytest.fixture
def study_env(tmp_path, cache_dir, monkeypatch):
    """Run launches inside tmp_path with the session's data cache and a private runs dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER_STUDY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FER_STUDY_CACHE", cache_dir)
    return tmp_path
