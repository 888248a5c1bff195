"""gpu_worker/backends/comfyui/oom.py: out of memory as either engine reports it."""

from __future__ import annotations

from gpu_worker.backends.comfyui.oom import is_out_of_memory


def test_torchs_out_of_memory_error_as_0_3_75_reports_it():
    assert is_out_of_memory({"exception_type": "torch.OutOfMemoryError", "exception_message": "CUDA out of memory."})
    assert is_out_of_memory({"exception_type": "torch.cuda.OutOfMemoryError", "exception_message": ""})
    assert is_out_of_memory({"exception_type": "MemoryError", "exception_message": ""})


def test_an_accelerator_error_with_the_out_of_memory_code_as_upstreams_is_oom_counts_it():
    assert is_out_of_memory({"exception_type": "torch.AcceleratorError",
                             "exception_message": "CUDA error: out of memory\nCUDA kernel errors might be ..."})
    # Another accelerator failure is not out of memory: a backend_error as before.
    assert not is_out_of_memory({"exception_type": "torch.AcceleratorError",
                                 "exception_message": "CUDA error: an illegal memory access was encountered"})


def test_other_failures_are_not_out_of_memory():
    assert not is_out_of_memory(None) and not is_out_of_memory({})
    assert not is_out_of_memory({"exception_type": "RuntimeError", "exception_message": "shape mismatch"})
    # The text alone does not make a RuntimeError out of memory: only the types above.
    assert not is_out_of_memory({"exception_type": "ValueError", "exception_message": "out of memory budget"})
