"""The fast tier (`scripts/test -m "not slow"`): its list of measured-slow tests still names real tests, the
launch rule marks what starts Ray and leaves unit tests alone, and every test module keeps a fast test."""

from __future__ import annotations

import ast
from pathlib import Path

import tiers

TESTS = Path(__file__).resolve().parent


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_listed_slow_test_exists():
    for entry in tiers.SLOW_TESTS:
        file, func = entry.split("::")
        assert (TESTS / file).is_file() and func in _functions(TESTS / file), entry


def test_the_launch_rule_marks_launches_not_unit_tests():
    def launches(tmp_path):
        fer_cli("launch", "smoke", "--profile", "smoke")  # noqa: F821 (never called: only its source is read)

    def refuses(args):
        main(["validate", "smoke"])  # noqa: F821

    assert tiers.starts_ray(launches) and not tiers.starts_ray(refuses)
    assert tiers.listed_slow("tests/test_train.py::test_every_data_sampler_trains[none]")
    assert not tiers.listed_slow("tests/test_train.py::test_every_data_sampler_trains_fast")


def test_every_test_module_but_the_launch_and_benchmark_ones_keeps_a_fast_test():
    """A module whose every test is slow leaves its fer_core code out of the fast tier: only the modules
    that exist to launch (faults, reliability, cluster, launch) and the benchmarks' tiny runs may."""
    all_slow = {"test_benchmarks.py", "study/test_faults.py", "study/test_reliability.py", "study/test_cluster.py",
                "study/test_launch.py", "study/test_cams.py", "study/test_pretrained_launch.py",
                "study/test_launch_overrides.py"}
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = str(path.relative_to(TESTS))
        tests = {f for f in _functions(path) if f.startswith("test_")}
        listed = {e.split("::")[1] for e in tiers.SLOW_TESTS if e.split("::")[0] == rel}
        if rel not in all_slow:
            assert tests - listed, f"{rel}: every test is listed slow"
