"""gpu_worker/progress.py: a backend's step reports, as the worker's I/O thread takes them."""

from __future__ import annotations

import threading

from gpu_worker import progress


def test_take_gives_the_latest_position_once_and_only_when_it_changed():
    reporter = progress.Reporter("j1")
    assert reporter.take() is None  # no step yet
    for step in range(1, 6):  # five steps between two looks: only the last one leaves
        reporter.report(step, 10)
    assert reporter.take() == (5, 10)
    assert reporter.take() is None
    reporter.report(5, 10)
    assert reporter.take() is None  # the same position again is no news
    reporter.report(10, 10)
    assert reporter.take() == (10, 10)


def test_what_is_not_a_position_in_a_loop_is_ignored():
    reporter = progress.Reporter("j1")
    for step, total in ((1, 0), (-1, 5), (6, 5), ("x", 5), (None, 5)):
        reporter.report(step, total)  # type: ignore[arg-type]
    assert reporter.take() is None
    reporter.report(2.0, 4.0)  # type: ignore[arg-type]  # numbers of another type are fine
    assert reporter.take() == (2, 4)


def test_report_reaches_the_running_jobs_reporter_only_while_it_runs():
    progress.report(1, 2)  # no job: a no-op (a warm-up, say)
    reporter = progress.Reporter("j1")
    with progress.reporting(reporter):
        # A backend may report from a thread of its engine's own.
        thread = threading.Thread(target=progress.report, args=(3, 8))
        thread.start()
        thread.join()
    progress.report(8, 8)  # after the job: goes nowhere
    assert reporter.take() == (3, 8)
