from __future__ import annotations

import pytest

from supervisor.gpu.selection import parse_visible_devices, worker_gpus

UUID_A = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
UUID_B = "GPU-11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    "device, visible, expected",
    [
        ("cpu", None, []),
        ("cpu", "0,1", []),
        ("auto", None, [0]),
        ("cuda", None, [0]),
        ("cuda:2", None, [2]),
        # The worker's cuda:N is the N-th visible device, not machine GPU N.
        ("cuda", "3,1", [3]),
        ("cuda:1", "3,1", [1]),
        ("cuda:1", f"{UUID_A},{UUID_B}", [UUID_B]),
        ("cuda:0", "GPU-8932f937", ["GPU-8932f937"]),
        # More than the worker can see, or nothing visible: no GPU of ours.
        ("cuda:2", "3,1", []),
        ("cuda", "", []),
        ("cuda", "-1", []),
        # A device string the worker might report that is not CUDA.
        ("mps", None, []),
    ],
)
def test_the_workers_gpu_in_nvml_terms(device, visible, expected):
    assert worker_gpus(device, visible) == expected


def test_visible_devices_stop_at_the_first_invalid_entry_like_cuda():
    assert parse_visible_devices("2, 0,-1,1") == [2, 0]
    assert parse_visible_devices(f"1,{UUID_A},garbage,0") == [1, UUID_A]
