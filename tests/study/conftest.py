"""Real services for the study-service tests: a PostgreSQL server (never mocked) and Ray."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from helpers import free_port

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


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temp dir, its own port), so a test can
    stop and start it without touching the shared server other test runs use."""

    bindir: str
    datadir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *cmd: str, timeout: float = 120) -> None:
        # initdb and the server refuse to run as root; CI runs as root
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.datadir.parent}"
        self._pg(f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir.parent / "pg.log"),
                 "-o", opts, "-w", "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg(f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "120", "stop")


@pytest.fixture
def private_pg():
    """A private PostgreSQL on a free 127.0.0.1 port, removed afterwards."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    assert initdb, "PostgreSQL server binaries (initdb, pg_ctl) are needed"
    root = Path(tempfile.mkdtemp(prefix="fer-pg-"))
    root.chmod(0o777)  # the postgres user writes its socket and log here
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    pg = PrivatePostgres(str(Path(initdb).parent), root / "data", free_port())
    pg._pg(initdb, "-D", str(pg.datadir), "-U", "postgres", "-A", "trust", "--no-sync")
    pg.start()
    try:
        yield pg
    finally:
        try:
            pg.stop("immediate")
        except AssertionError:
            pass  # already stopped
        shutil.rmtree(root, ignore_errors=True)
