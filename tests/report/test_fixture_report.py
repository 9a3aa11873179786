"""A stored study reports the same numbers after any refactor: ``fer-study report`` on the committed
fixture storage (tests/fixtures/report-fixture.db, written by a real launch of
tests/fixtures/report-fixture.yaml: 3 variants x 2 seeds on the digits data, with flip TTA) gives the
committed report.csv byte for byte. The storage's user attrs are what users' databases hold, so a
change in how trials are stored, read or renamed shows up here, not in their old studies."""

from __future__ import annotations

import shutil
from pathlib import Path

from fer_core.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_the_committed_study_reports_a_byte_identical_csv(tmp_path):
    db = tmp_path / "report-fixture.db"
    shutil.copy(FIXTURES / "report-fixture.db", db)  # a copy: the checkout stays untouched
    out = tmp_path / "out"
    rc = main(["report", "report-fixture", "--storage", f"sqlite:///{db}", "--format", "csv", "--out", str(out)])
    assert rc == 0
    want = (FIXTURES / "report-fixture" / "report.csv").read_bytes()
    assert (out / "report.csv").read_bytes() == want
