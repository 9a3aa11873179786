"""The terminal consoles every command and the launch progress print to (rich).

A core-level utility: the CLI and the study runner both print through it, so neither
imports the other for it.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Piped output (CI logs, files) gets wide lines instead of rich's 80-column default,
# so per-class tables are not truncated.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "140"))
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)
