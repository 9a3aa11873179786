"""scripts/test and scripts/provision.py: the test command finds the browser the dashboard test needs, or
stops before pytest with one line saying what to install. scripts/device_bundle.py: what the GPU machine
lacks, slimmed to fit one device call."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def provision():
    spec = importlib.util.spec_from_file_location("provision", ROOT / "scripts" / "provision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No chromium or docker-compose on PATH, no Playwright browser, nothing to be installed."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "HOME": str(tmp_path), "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "browsers"),
            "FER_TEST_NO_INSTALL": "1", **extra}


def test_without_any_browser_provisioning_stops_with_one_line(provision, tmp_path, capsys):
    assert provision.main(_bare_env(tmp_path)) == 1
    out, err = capsys.readouterr()
    assert out == ""  # nothing for scripts/test to export: it stops on the exit code, before pytest
    assert err.strip().splitlines() == [provision.INSTALL_HINT]
    assert "apt-get install chromium" in err and "playwright install chromium" in err


def test_a_named_browser_that_does_not_launch_is_not_taken(provision, tmp_path, capsys):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    assert provision.main(_bare_env(tmp_path, FER_TEST_CHROMIUM=str(fake))) == 1
    assert capsys.readouterr().err.strip() == provision.INSTALL_HINT


def test_the_browser_this_machine_has_is_found_and_exported(provision, tmp_path, capsys):
    """Debian's chromium when on PATH (alone on a PATH of its own: no docker-compose there); else Playwright's
    own, which then must be installed: scripts/test ran provisioning before this suite."""
    chromium = shutil.which("chromium")
    if chromium:
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "chromium").symlink_to(chromium)
        assert provision.main(_bare_env(tmp_path)) == 0
        out, err = capsys.readouterr()
        assert out.splitlines() == [f"export FER_TEST_CHROMIUM={tmp_path / 'bin' / 'chromium'}"]
        assert "browser: Debian's chromium" in err
        assert "docker-compose: not installed" in err  # and it says the compose cross-check will not run
    else:
        assert provision.main({**os.environ, "FER_TEST_NO_INSTALL": "1", "FER_TEST_CHROMIUM": ""}) == 0
        out, err = capsys.readouterr()
        assert "export FER_TEST_CHROMIUM=''" in out.splitlines() and "Playwright's own Chromium" in err


def test_the_test_command_provisions_before_pytest_and_stops_when_that_fails(tmp_path):
    """scripts/test as bash runs it, with pip and pytest replaced by stand-ins: a failed provisioning ends
    the command with its exit code, before pytest; a successful one hands its exports to pytest."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "test", repo / "scripts" / "test")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    stub = ('#!/bin/sh\n'
            'case "$1" in scripts/provision.py) echo "export FER_TEST_CHROMIUM=/x"; exit "$PROVISION_RC";;\n'
            '-m) echo "pytest ran with $FER_TEST_CHROMIUM: $*";;\nesac\n')
    for name, text in (("python", stub), ("pip", "#!/bin/sh\n")):
        (venv_bin / name).write_text(text)
        (venv_bin / name).chmod(0o755)
    (repo / "scripts" / "provision.py").write_text("")
    fake_python3 = tmp_path / "bin" / "python3"  # `python3 -m venv .venv` leaves the stand-in venv as it is
    fake_python3.parent.mkdir()
    fake_python3.write_text("#!/bin/sh\n")
    fake_python3.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_python3.parent}:{os.environ['PATH']}"}

    failed = subprocess.run(["bash", str(repo / "scripts" / "test")], env={**env, "PROVISION_RC": "1"},
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "pytest ran" not in failed.stdout
    ok = subprocess.run(["bash", str(repo / "scripts" / "test"), "-x"], env={**env, "PROVISION_RC": "0"},
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "pytest ran with /x: -m pytest -q -x", ok.stdout + ok.stderr


def test_the_device_bundle_drops_what_tune_never_loads_keeps_modes_and_strips_binaries(tmp_path):
    """scripts/device_bundle.py on a stand-in Ray wheel: its jar, dashboard client and RLlib are gone,
    its modules stay, and its binary keeps its exec bit, loses its symbols and still runs."""
    spec = importlib.util.spec_from_file_location("device_bundle", ROOT / "scripts" / "device_bundle.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    exe = tmp_path / "hello"
    (tmp_path / "hello.c").write_text("int main(void) { return 7; }\n")
    subprocess.run(["gcc", "-g", "-o", str(exe), str(tmp_path / "hello.c")], check=True)  # with debug symbols
    wheel = tmp_path / "ray-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in ("ray/__init__.py", "ray/jars/ray_dist.jar", "ray/dashboard/client/build/main.js",
                     "ray/rllib/__init__.py", "ray/dashboard/agent.py", "ray-0.0.1.dist-info/METADATA"):
            z.writestr(name, "x = 1\n")
        info = zipfile.ZipInfo("ray/core/src/ray/gcs/gcs_server")
        info.external_attr = (0o755 | 0o100000) << 16  # an executable regular file, as Ray's wheel has it
        z.writestr(info, exe.read_bytes())
    size = bundle.bundle([wheel], tmp_path / "out" / "site.tar.xz")
    assert size == (tmp_path / "out" / "site.tar.xz").stat().st_size > 0
    site = tmp_path / "site"
    with tarfile.open(tmp_path / "out" / "site.tar.xz") as tar:
        tar.extractall(site, filter="tar")
    assert (site / "ray/__init__.py").is_file() and (site / "ray/dashboard/agent.py").is_file()
    assert (site / "ray-0.0.1.dist-info/METADATA").is_file()
    assert not any((site / p).exists() for p in bundle.PRUNE)
    binary = site / "ray/core/src/ray/gcs/gcs_server"
    assert os.access(binary, os.X_OK) and binary.stat().st_size < exe.stat().st_size  # stripped
    assert subprocess.run([str(binary)]).returncode == 7  # and still runs
