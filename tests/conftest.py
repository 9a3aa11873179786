from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from pg_server import LocalPostgres
from tiers import listed_slow, starts_ray

from fer_core.data.dataset import TEST, TRAIN, VAL, FerDataset

# Tests never reach for the network (there may be none, and a hanging download would stall the
# suite): pretrained weights come from a file or a hub cache a test populates itself.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# amp: auto takes fp32 without timing anything (fer_core/precision.py): a verdict that depends on how
# busy the machine is would make trainings, and the tests that compare them, differ between runs;
# tests/test_precision.py measures with this unset
os.environ.setdefault("FER_STUDY_AMP_AUTO", "off")


# Tests never touch the user's cache; one session-wide cache holds the rendered stand-in.
@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("fer-cache"))
    os.environ["FER_STUDY_CACHE"] = path
    return path


@pytest.fixture(scope="session")
def standin(cache_dir) -> FerDataset:
    """The real synthetic RAF-CE stand-in at 48 px, rendered and decoded once per session."""
    from fer_core.data.sources import load_dataset

    return load_dataset(dataset="synthetic", img_size=48, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def small(standin) -> FerDataset:
    """A few hundred images with the stand-in's imbalance clipped: fast enough for every registry entry."""
    return standin.subset_per_class({TRAIN: 24, VAL: 8, TEST: 8})


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[str]:
    """An admin libpq URL of the real PostgreSQL server the session's tests make databases on.

    ``$FER_TEST_PG_URL`` names a running server to use (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``);
    without it the session starts its own from the wheel's binaries (tests/pg_server.py) on a free port in a
    temp dir, and removes it at the end. Never mocked, never skipped."""
    given = os.environ.get("FER_TEST_PG_URL")
    if given:
        yield given
        return
    pg = LocalPostgres.create()
    try:
        pg.start()
        yield pg.admin_dsn
    finally:
        pg.remove()


@pytest.fixture
def pg_url(pg_admin) -> Iterator[str]:
    """A fresh database on that server (a storage URL for fer-study), dropped afterwards."""
    name = f"fer_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(pg_admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the fast tier: `scripts/test -m "not slow"`; which tests are slow is decided in tests/tiers.py --------


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        if listed_slow(item.nodeid):
            item.add_marker(pytest.mark.slow)
            continue
        fixtures = getattr(item, "_fixtureinfo", None)
        defs = [d for ds in (fixtures.name2fixturedefs.values() if fixtures else ()) for d in ds]
        if starts_ray(getattr(item, "function", None)) or any(starts_ray(d.func) for d in defs):
            item.add_marker(pytest.mark.slow)
