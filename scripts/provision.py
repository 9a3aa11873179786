"""What the tests need beyond the Python packages, found (or installed) before pytest starts.

Run by scripts/test with the venv's Python, after pip installed the test extras (which bring
PostgreSQL's server binaries and jsonschema, so nothing here is about those). Prints ``export`` lines
for scripts/test to evaluate, and one line per tool on stderr saying which one the tests will use:

- a Chromium that Playwright can launch headless (the dashboard test): Debian's ``chromium`` when
  present; else Playwright's own, when installed; else, as root with apt-get, Debian's package; else
  Playwright's download (``python -m playwright install chromium``, needs a network). With none of
  them it stops with one line saying what to install, exit 1: the suite never runs, and so never
  passes, without its browser test.
- ``docker-compose`` (optional): the compose tests check docker-compose.yml against the Compose
  schema without it; with it they also run ``docker-compose config``. Installed with Debian's package
  when running as root with apt-get (CI does), else reported as not there.

``FER_TEST_NO_INSTALL=1``: install nothing, use only what is there (a person who does not want apt-get
or a download run for them; the tests of this script use it too).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping

_LAUNCH = """
import sys
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    b = p.chromium.launch(executable_path=sys.argv[1] or None, headless=True,
                          args=["--no-sandbox", "--disable-gpu"])
    b.new_page().set_content("<p>ok</p>")
    b.close()
"""

INSTALL_HINT = ("error: no Chromium for the dashboard test: install Debian's (as root: apt-get update && "
                "apt-get install chromium) or Playwright's (.venv/bin/python -m playwright install chromium, "
                "needs a network), then run scripts/test again")


def launches(executable: str | None, env: Mapping[str, str]) -> bool:
    """Whether Playwright launches this Chromium (None: Playwright's own) headless and renders a page."""
    try:
        proc = subprocess.run([sys.executable, "-c", _LAUNCH, executable or ""], env=dict(env),
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def find_chromium(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(executable, what it is) of the first Chromium that launches; executable "" is Playwright's own."""
    given = env.get("FER_TEST_CHROMIUM")
    if given:
        return (given, "$FER_TEST_CHROMIUM") if launches(given, env) else None  # named, so no other
    debian = shutil.which("chromium", path=env.get("PATH", ""))
    if debian and launches(debian, env):
        return debian, "Debian's chromium"
    if launches(None, env):
        return "", "Playwright's own Chromium"
    return None


def may_install(env: Mapping[str, str]) -> bool:
    return env.get("FER_TEST_NO_INSTALL", "") in ("", "0")


def can_apt(env: Mapping[str, str]) -> bool:
    return may_install(env) and os.geteuid() == 0 and bool(shutil.which("apt-get", path=env.get("PATH", "")))


def apt_install(packages: list[str], env: Mapping[str, str]) -> None:
    """Debian's packages; a failure is reported and left to the checks that follow."""
    apt_env = {**env, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"test set-up: apt-get install {' '.join(packages)}", file=sys.stderr)
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        proc = subprocess.run(cmd, env=apt_env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            print(f"test set-up: {' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}",
                  file=sys.stderr)
            return


def main(env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    path = env.get("PATH", "")
    chromium = find_chromium(env)
    compose = shutil.which("docker-compose", path=path)
    wanted = ([] if chromium else ["chromium"]) + ([] if compose else ["docker-compose"])
    if wanted and can_apt(env):
        apt_install(wanted, env)
        chromium = chromium or find_chromium(env)
        compose = shutil.which("docker-compose", path=path)
    if chromium is None and may_install(env):
        print("test set-up: python -m playwright install chromium", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], env=env,
                           capture_output=True, timeout=900)
        except subprocess.TimeoutExpired:
            pass
        chromium = find_chromium(env)
    if chromium is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1

    exe, what = chromium
    print(f"test set-up: browser: {what}{f' ({exe})' if exe else ''}", file=sys.stderr)
    print(f"export FER_TEST_CHROMIUM={shlex.quote(exe)}")
    if compose:
        print(f"test set-up: docker-compose: {compose} (docker-compose config checks docker-compose.yml too)",
              file=sys.stderr)
        print(f"export FER_TEST_DOCKER_COMPOSE={shlex.quote(compose)}")
    else:
        print("test set-up: docker-compose: not installed, so `docker-compose config` will not run (its test "
              "is skipped); docker-compose.yml is checked against the Compose schema", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
