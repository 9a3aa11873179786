"""Every benchmark runs in its tiny mode, so none can rot (the figures are recorded in benchmarks/RESULTS.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["trainable_throughput.py", "service_overhead.py", "storage_load.py", "search_efficiency.py"])
def test_benchmark_tiny_mode_prints_a_ratio(script, cache_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FER_STUDY_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = re.findall(r"^.*\bratio .*$", proc.stdout, re.MULTILINE)
    assert lines, proc.stdout
    for line in lines:
        # a number, or (search efficiency, where a method may miss the target in most runs) a bound or why not
        m = re.search(r": (?:< )?(\d+\.\d+|inf)x|: n/a, neither reached it|: \(c\) did not reach it", line)
        assert m and (m.group(1) is None or float(m.group(1)) >= 0), line


@pytest.mark.parametrize(("script", "needles"), [
    ("tta.py", [r"^\| none \|", r"^\| flip \|", r"^\| multi_crop \|", r"^flip +0:[+-]\d"]),
    ("distillation.py", [r"^teacher \(", r"^\| alone \|", r"^\| distilled \|",
                         r"^gain test macro-F1 \(distilled - alone, paired by seed\): [+-]?\d"]),
])
def test_evaluation_benchmark_tiny_mode_prints_its_table(script, needles, cache_dir, tmp_path):
    """The issue-7 benchmarks (TTA per class, distillation) have no ratio; their tables must still come out."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for needle in needles:
        assert re.search(needle, proc.stdout, re.MULTILINE), (needle, proc.stdout[-2000:])
