"""The `auto` overlap decision (supervisor/worker/overlap.py): pure, on measured figures."""

from __future__ import annotations

from supervisor.worker.overlap import GiB, MemoryFigures, decide


def gpu(footprint: int | None, free: int | None, error: str | None = None) -> MemoryFigures:
    return MemoryFigures("gpu", footprint, free, "NVML, worker process 7", error)


def test_overlaps_when_the_free_memory_exceeds_footprint_plus_margin():
    # An H200 with the Qwen workflow loaded: 141 GiB, the worker holds ~40, ~100 free.
    decision = decide(gpu(40 * GiB, 100 * GiB), 2 * GiB)
    assert decision.overlap
    assert decision.why == (
        "free gpu memory 100.00 GiB against the current worker's 40.00 GiB plus the margin 2.00 GiB = 42.00 GiB"
    )


def test_falls_back_when_it_does_not_fit_and_at_the_exact_limit():
    assert not decide(gpu(40 * GiB, 41 * GiB), 2 * GiB).overlap  # an 80 GiB card: one copy only
    assert not decide(gpu(40 * GiB, 42 * GiB), 2 * GiB).overlap  # "exceeds": equal is not enough
    assert decide(gpu(40 * GiB, 42 * GiB + 1), 2 * GiB).overlap


def test_a_margin_larger_than_any_memory_never_overlaps():
    assert not decide(MemoryFigures("ram", 300 * 2**20, 20 * GiB), 2**50).overlap


def test_without_figures_it_falls_back_and_says_why():
    decision = decide(MemoryFigures.unknown("gpu", "NVML: NVMLError_LibraryNotFound"), 0)
    assert not decision.overlap and decision.why == "no gpu figures to judge by (NVML: NVMLError_LibraryNotFound)"
    assert not decide(gpu(None, 100 * GiB), 0).overlap
