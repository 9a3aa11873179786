"""Shared by the tests: the ``fer-study`` command as users run it, and a free local port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


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
