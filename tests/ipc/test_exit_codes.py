"""The worker's exit statuses, as both processes read them."""

from __future__ import annotations

from ipc.exit_codes import PERMANENT_FAILURES, STARTUP_FAILURES, WorkerExit, is_permanent, is_startup_failure, meaning


def test_the_statuses_the_readme_documents():
    assert (WorkerExit.LOAD_FAILED, WorkerExit.PARENT_GONE) == (4, 5)
    assert WorkerExit.STOPPED == 0 and WorkerExit.INTERNAL_ERROR == 1


def test_every_status_has_a_meaning_and_others_none():
    assert all(meaning(code) for code in WorkerExit)
    assert meaning(4) == "the backend could not load"
    assert meaning(3) is None and meaning(-9) is None


def test_a_start_that_failed_is_not_an_internal_error():
    assert is_startup_failure(4) and is_startup_failure(2)
    assert not is_startup_failure(1) and not is_startup_failure(0) and not is_startup_failure(-11)
    assert STARTUP_FAILURES <= set(WorkerExit)


def test_a_start_refused_for_good_is_a_startup_failure_that_is_never_retried():
    assert WorkerExit.UNRUNNABLE == 6 and is_startup_failure(6) and is_permanent(6)
    assert "not retried" in meaning(6)
    assert not is_permanent(4) and not is_permanent(1) and not is_permanent(-9)  # these are retried
    assert PERMANENT_FAILURES <= STARTUP_FAILURES
