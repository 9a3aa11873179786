from __future__ import annotations

import os
import subprocess
import sys


def fer_cli(*args: str, env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run ``fer-study`` as users do, in a fresh process (its own Ray)."""
    return subprocess.run([sys.executable, "-m", "fer_core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, **kw)
