"""Shared by the tests: the ``fer-study`` command as users run it, and a free local port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def fer_cli_cmd(*args: str) -> list[str]:
    """The argv of ``fer-study ARGS`` in a fresh process, for tests that start it in the background."""
    return [sys.executable, "-m", "fer_core.cli", *args]


def fer_cli(*args: str, env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run ``fer-study`` as users do, in a fresh process (its own Ray)."""
    return subprocess.run(fer_cli_cmd(*args), capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, **kw)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the Chromium scripts/test found (scripts/provision.py; "" is Playwright's own), else Debian's, else Playwright's
# own: when none is installed the launch fails and so does the test, never skipped
CHROMIUM = (os.environ["FER_TEST_CHROMIUM"] if "FER_TEST_CHROMIUM" in os.environ
            else shutil.which("chromium") or "") or None


def launch_chromium(playwright):
    """A headless Chromium (``CHROMIUM``) from a running ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])


@contextmanager
def running_dashboard(url: str, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``fer-study dashboard --storage URL ARGS`` on a free port, once it answers: (base URL, process)."""
    port = free_port()
    proc = subprocess.Popen(fer_cli_cmd("dashboard", "--storage", url, "--port", str(port), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/meta", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"dashboard did not start: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def patch_validation_scores(monkeypatch, scores) -> None:
    """Make ``train_fer`` see the given validation macro-F1s, one per epoch (early-stopping tests)."""
    import fer_core.train as train_mod
    from fer_core.data.dataset import VAL

    it, real = iter(scores), train_mod.evaluate

    def fake_eval(pred, ds, idx, groups, with_aus):
        m = real(pred, ds, idx, groups, with_aus)
        if idx.numel() and int(ds.split[idx[0]]) == VAL:
            m["macro_f1"] = next(it)
        return m

    monkeypatch.setattr(train_mod, "evaluate", fake_eval)


def polled_trials(url: str, study_name: str = "smoke") -> list:
    """A running launch's trials as a test polls them: [] until the driver has created the study. The
    storage opens through ``open_storage``, which waits out the driver creating Optuna's tables on a
    fresh database (a poll's first open races it: a duplicate alembic_version row for the loser)."""
    import optuna

    from fer_core.study.storage import open_storage

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(url)).get_trials(deepcopy=False)
    except KeyError:
        return []


# a sequential design's smoke study (design.sequential): two looks over three seeds, a row that stays open
SEQUENTIAL_SMOKE = """
# seq-smoke: a sequential design's launch (tests): two looks, a row that stays open
name: seq-smoke
question: does a sequential launch resume where it stopped?
extends: smoke
data: {dataset: digits}
seeds: [0, 1, 2]
design:
  kind: one_at_a_time
  baseline: plain-ce
  variants: {lr_nudge: {lr: 0.0021}}  # almost the baseline: neither decided nor futile after look 1
  sequential: {looks: [2, 3], min_effect: 1.0e-6, futility_power: 1.0e-9}
checkpoint_min_s: 0
profiles:
  smoke:
    base: {backbone: test_resnet, img_size: 32, epochs: 1, warmup_epochs: 0, batch_size: 32}
    seeds: [0, 1, 2]
"""
