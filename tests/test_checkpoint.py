"""Layering of the core: fer_core/checkpoint.py holds the model files that the core (teachers) and the study
layer (export) share, so nothing in the core reaches up into study/, report/ or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import fer_core


def test_core_modules_never_import_the_study_report_or_cli_layers():
    """DESIGN.md "Layers": the core (data, losses, models, checkpoint, train, distill...) sits below study/,
    report/ and the CLI, so a worker or a benchmark imports no storage code; late imports count too."""
    root = Path(fer_core.__file__).parent
    upper = ("fer_core.study", "fer_core.report", "fer_core.cli")
    hits = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] in ("study", "report", "cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            hits += [f"{path.relative_to(root)}: {n}" for n in names if n.startswith(upper)]
    assert hits == []
