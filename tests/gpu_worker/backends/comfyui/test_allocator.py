from __future__ import annotations

from gpu_worker.backends.comfyui.allocator import ASYNC, ENV, choose


def test_cuda_malloc_async_is_set_for_a_gpu_worker():
    environ: dict[str, str] = {}
    allocator = choose(True, "cuda:0", environ)
    assert environ == {ENV: "backend:cudaMallocAsync"} == {ENV: ASYNC}
    assert (allocator.conf, allocator.source) == (ASYNC, "node")


def test_an_operators_setting_is_kept_as_it_is():
    environ = {ENV: "expandable_segments:True"}
    allocator = choose(True, "cuda:0", environ)
    assert environ == {ENV: "expandable_segments:True"}
    assert (allocator.conf, allocator.source) == ("expandable_segments:True", "operator")


def test_off_or_on_the_cpu_nothing_is_set():
    for wanted, device in ((False, "cuda:0"), (True, "cpu")):
        environ: dict[str, str] = {}
        assert choose(wanted, device, environ).source == "default"
        assert environ == {}


def test_torch_already_imported_is_reported():
    import torch  # noqa: F401  (in pytest's process it may be imported already)

    assert choose(True, "auto", {}).too_late is True
