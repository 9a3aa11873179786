"""Every benchmark runs in its tiny mode, so none can rot (the figures are recorded in benchmarks/RESULTS.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# each tiny run starts a benchmark's own launches or trainings: 50-90 s apiece on 2 cores
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FER_STUDY_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("script", ["trainable_throughput.py", "service_overhead.py", "cam_overhead.py"])
def test_benchmark_tiny_mode_prints_a_ratio(script, cache_dir, tmp_path):
    _check_ratios(_run(script, "--tiny", tmp_path=tmp_path))


def test_storage_load_tiny_mode_prints_a_ratio(pg_admin, tmp_path):
    """On the session's PostgreSQL server (the benchmark's default is a server on 5432, which a test
    machine need not have)."""
    _check_ratios(_run("storage_load.py", "--tiny", "--pg", pg_admin, tmp_path=tmp_path))


def test_search_efficiency_tiny_mode_and_a_longer_random_search_from_its_traces(cache_dir, tmp_path):
    """The tiny run prints its ratios and saves its curves; --confirm trains their held-out confirmation
    and saves it beside; --from-traces prints the same confirmation from the file; --extend-random then
    continues (a) alone from where it stopped (its first trial re-trained and checked, not the others)."""
    import json

    _check_ratios(_run("search_efficiency.py", "--tiny", "--confirm-seeds", "0", "--traces", "t.json", "--plot", "p.png",
                        tmp_path=tmp_path))
    assert "confirm" not in json.loads((tmp_path / "t.json").read_text())  # the searches only, so far
    first = _run("search_efficiency.py", "--confirm", "t.json", "--confirm-seeds", "2", "--plot", "p.png",
                 tmp_path=tmp_path)  # trained for the saved searches, saved into the same file
    _check_ratios(first)
    # the held-out confirmation: each run's chosen config re-trained with fresh seeds, scored on test
    confirmed = re.findall(r"^confirmed .*$", first, re.MULTILINE)
    assert len(confirmed) == 5, first  # three methods, two paired Δs of (c)
    for line in confirmed:
        assert re.search(r": (test macro-F1 )?[+-]?\d\.\d{3} \[[+-]?\d\.\d{3}, [+-]?\d\.\d{3}\]", line), line
    assert "the search's randomness is NOT carried" in first  # one repetition: said, not hidden
    saved = json.loads((tmp_path / "t.json").read_text())
    conf = saved["confirm"]
    assert conf["seeds"] == [1000, 1001] and 0 not in conf["seeds"]  # fresh: the search trained with seed 0
    for name, curves in saved["runs"].items():
        chosen = [p for p in curves[0] if p[0] <= conf["equal"]][-1][4]  # best-so-far params at equal compute
        assert conf["runs"][name][0]["params"] == chosen and chosen, name
        assert [len(p) for p in conf["runs"][name][0]["preds"]] == [len(conf["labels"])] * 2
    # the table again from the saved file, without training: the same confirmation lines
    again = _run("search_efficiency.py", "--from-traces", "t.json", "--plot", "p.png", tmp_path=tmp_path)
    assert re.findall(r"^confirmed .*$", again, re.MULTILINE) == confirmed

    out = _run("search_efficiency.py", "--extend-random", "t.json", "--random-trials", "3", "--traces", "t3.json",
               "--plot", "p.png", tmp_path=tmp_path)
    _check_ratios(out)
    extended = json.loads((tmp_path / "t3.json").read_text())
    before, after = saved["runs"], extended["runs"]
    name = "(a) random, no pruning"
    assert [p[0] for p in after[name][0]] == [1, 2, 3]  # one more 1-epoch trial
    assert after[name][0][:2] == before[name][0]  # the saved trials kept as they were
    assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}
    assert extended["confirm"] == conf  # chosen within the shared budget: the longer (a) does not change it
    assert re.search(r"^1 repetitions x 2 trials \(\(a\): 3; targets from the first 2\)", out, re.MULTILINE), out


def _check_ratios(stdout: str) -> None:
    lines = re.findall(r"^.*\bratio .*$", stdout, re.MULTILINE)
    assert lines, stdout
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


def test_stats_simulation_prints_a_row_per_regime_and_part(tmp_path):
    """The statistics' simulation benchmark with two studies a setting: every regime's table, and with
    --ablate a row per removed part (the figures of 2 studies mean nothing; the columns must come out)."""
    out = _run("stats_simulation.py", "--studies", "2", "--seeds", "3", "--no-power", tmp_path=tmp_path)
    for name in ("mixed", "agreeing", "unequal", "small classes"):
        assert f"### regime: {name}" in out, out
    assert len(re.findall(r"^\| \(nothing: the method\) \| 3 \| \d\.\d{3} \| \d\.\d{3} \|", out, re.MULTILINE)) == 4, out
    out = _run("stats_simulation.py", "--studies", "2", "--seeds", "3", "--no-power", "--ablate", "--regime", "agreeing",
               tmp_path=tmp_path)
    for part in ("seed part", "image part", "Holm", "common seed component", "finite image df"):
        assert re.search(rf"^\| {part} \| 3 \| \d\.\d{{3}} \|", out, re.MULTILINE), (part, out)


def test_gpu_check_dry_mode_prints_every_section_and_writes_its_figures(cache_dir, tmp_path):
    """The GPU check's four sections run on CPU with tiny shapes (the figures are not performance
    claims); each prints a number and lands in the JSON file."""
    import json

    out = _run("gpu_check.py", "--dry", "--out", "figures.json", tmp_path=tmp_path)
    for needle in (r"^1\. test_resnet .*: [\d,]+ images/s", r"^2\. 2 x test_resnet@32 .*ratio \d+\.\d+x",
                   r"^3\. 2 one-epoch trials.*: -?\d+\.\d+ s per extra trial", r"^4\. fer-study launch smoke .*: \d+\.\d+ s"):
        assert re.search(needle, out, re.MULTILINE), (needle, out)
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["dry"] and figures["resnet50"]["eager_images_per_s"] > 0
    assert figures["packing"]["ratio"] > 0 and figures["packing"]["devices"] == ["cpu"]
    assert figures["smoke"]["report"].startswith("report written to")


def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA device" in proc.stderr
