"""The bridge's rate-limited study note: built at once, then at most once per gap, never left stale."""

from __future__ import annotations

import pickle
import threading
import time

import optuna

from fer_core.study.bridge import RateLimitedNote


def _study_and_seen():
    """A real (in-memory) Optuna study and a note function that records how many trials each build saw."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    seen: list[tuple[int, str]] = []

    def note(s: optuna.Study, planned: int | None) -> None:
        seen.append((len(s.get_trials(deepcopy=False)), threading.current_thread().name))

    return study, seen, note


def _broken_note(study: optuna.Study, planned: int | None) -> None:  # module-level: it is pickled
    raise RuntimeError("dashboard storage hiccup")


def _finish_trial(study: optuna.Study) -> None:
    study.tell(study.ask(), 0.5)


def _wait_for(seen: list, n: int, timeout: float = 10.0) -> float:
    """Seconds until ``seen`` holds ``n`` builds (polled, so a loaded machine's late timer is not a failure)."""
    t0 = time.monotonic()
    while len(seen) < n and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    return time.monotonic() - t0


def test_first_request_builds_at_once_then_one_catch_up_shows_every_trial_of_the_gap():
    study, seen, note = _study_and_seen()
    rl = RateLimitedNote(note, min_gap_s=0.5, cost_factor=0)
    _finish_trial(study)
    rl.request(study, 10)
    assert [n for n, _ in seen] == [1]  # the first finished trial's note is built at once
    for _ in range(3):  # three more trials inside the gap: no build now, one catch-up scheduled
        _finish_trial(study)
        rl.request(study, 10)
    assert len(seen) == 1
    # one catch-up, after the gap, on its own thread, reading the storage then: all four trials
    assert _wait_for(seen, 2) >= 0.4  # the gap ran from the first build, a moment before the wait began
    assert [n for n, _ in seen] == [1, 4]
    assert seen[1][1] != threading.current_thread().name
    time.sleep(0.7)
    assert rl.builds == 2  # nothing further was pending


def test_final_builds_a_held_back_note_now_and_cancels_the_catch_up():
    study, seen, note = _study_and_seen()
    rl = RateLimitedNote(note, min_gap_s=30, cost_factor=0)
    _finish_trial(study)
    rl.request(study, 2)
    _finish_trial(study)
    rl.request(study, 2)  # held back for 30 s
    rl.final(study, 2)
    assert [n for n, _ in seen] == [1, 2]
    rl.final(study, 2)  # nothing pending: no further build
    assert rl.builds == 2


def test_the_gap_grows_with_the_cost_of_a_build():
    """A note that takes 0.1 s to build with cost_factor 5 holds the next one back ~0.5 s (min gap 0)."""
    study, seen, _ = _study_and_seen()

    def slow_note(s, planned):
        time.sleep(0.1)
        seen.append((len(s.get_trials(deepcopy=False)), ""))

    rl = RateLimitedNote(slow_note, min_gap_s=0.0, cost_factor=5)
    _finish_trial(study)
    rl.request(study, None)
    _finish_trial(study)
    rl.request(study, None)
    assert len(seen) == 1  # held back: the last build cost 0.1 s
    time.sleep(0.3)
    assert len(seen) == 1  # still inside 5 x 0.1 s
    _wait_for(seen, 2)
    assert [n for n, _ in seen] == [1, 2]


def test_a_failing_note_is_a_warning_and_the_refresher_survives_pickling(caplog):
    """Tune pickles the searcher that holds the refresher (no lock or timer may travel); a note that
    raises never stops the study."""
    study, seen, note = _study_and_seen()
    rl = RateLimitedNote(_broken_note, min_gap_s=30, cost_factor=0)
    rl.request(study, 1)
    rl.request(study, 1)  # schedules a catch-up timer
    clone = pickle.loads(pickle.dumps(rl))
    assert "study note not refreshed: dashboard storage hiccup" in caplog.text
    assert clone.builds == 1 and clone._timer is None
    rl.final(study, 1)
    assert rl.builds == 2
    clone.note = note  # the clone works on its own: its due time travelled, its timer did not
    clone.request(study, 1)
    clone.final(study, 1)
    assert len(seen) == 1
