"""Real services for the study-service tests: PostgreSQL (never mocked; the shared server and ``pg_url`` are
in tests/conftest.py) and Ray."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg_server import LocalPostgres


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


@pytest.fixture
def private_pg() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of the test's own (the wheel's binaries, a temp dir, a free 127.0.0.1 port), so a
    test can stop and start it without touching the server the other tests share; removed afterwards."""
    pg = LocalPostgres.create()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()
