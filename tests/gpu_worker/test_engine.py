from __future__ import annotations

import threading

import pytest

from gpu_worker.engine import (
    BackendContext, BackendNotFound, Engine, JobCancelled, JobError, JobInputs, JobOutput, LoadInfo, backend_class,
    compute_capability,
)

CONTEXT = BackendContext("cpu", {"behaviour": "ok"}, 10**8, ".")
INPUTS = JobInputs("j1", b"p", b"g", seed=1, output_format="png")


class ScriptedBackend:
    """Does what its settings say, so the engine's rules can be checked one by one."""

    def __init__(self, context: BackendContext) -> None:
        self.behaviour = context.settings["behaviour"]
        self.freed = 0

    def load(self) -> LoadInfo:
        if self.behaviour == "load_fails":
            raise FileNotFoundError("weights.safetensors")
        return LoadInfo(backend="scripted", model_version="scripted-1", device="cpu")

    def run(self, inputs, cancelled):
        if self.behaviour == "ok":
            return JobOutput(b"img", "image/png", 1, 1, inference_ms=1.0)
        if self.behaviour == "job_error":
            raise JobError("invalid_input", "garment_image: broken")
        if self.behaviour == "oom":
            raise MemoryError("host out of memory")
        if self.behaviour == "torch_oom":
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.behaviour == "cancel":
            raise JobCancelled()
        raise RuntimeError("a bug in the backend")

    def free_memory(self) -> None:
        self.freed += 1


def engine(behaviour: str) -> Engine:
    context = CONTEXT._replace(settings={"behaviour": behaviour})
    return Engine.load("tests.gpu_worker.test_engine:ScriptedBackend", context)


def test_backends_by_name_and_by_import_path():
    assert backend_class("reference").__name__ == "ReferenceBackend"
    assert backend_class("tests.gpu_worker.test_engine:ScriptedBackend") is ScriptedBackend
    with pytest.raises(BackendNotFound):
        backend_class("no.such.module:Thing")
    with pytest.raises(BackendNotFound):
        backend_class("tests.gpu_worker.test_engine:NoSuchClass")


def test_load_reports_info_and_an_overridden_model_version():
    e = Engine.load("tests.gpu_worker.test_engine:ScriptedBackend", CONTEXT, model_version="tryon-2026-11")
    assert e.info.model_version == "tryon-2026-11" and e.info.backend == "scripted"
    assert e.load_time_s >= 0


class Version(str):
    """Like torch.__version__: a str subclass msgspec would not encode."""


class VersionedBackend(ScriptedBackend):
    def load(self) -> LoadInfo:
        return LoadInfo("v", "v-1", "cpu", torch_version=Version("2.13.0"))


def test_load_info_becomes_plain_strings():
    info = Engine.load("tests.gpu_worker.test_engine:VersionedBackend", CONTEXT).info
    assert type(info.torch_version) is str and info.comfyui_version is None


class OptionsBackend(ScriptedBackend):
    def load(self) -> LoadInfo:
        return LoadInfo("o", "o-1", "cpu", engine_options={"reserve_vram": 1.5}, gpu_compute_capability=Version("9.0"))


def test_engine_options_stay_an_object():
    info = Engine.load("tests.gpu_worker.test_engine:OptionsBackend", CONTEXT).info
    assert info.engine_options == {"reserve_vram": 1.5} and type(info.gpu_compute_capability) is str


class EngineBackend(ScriptedBackend):
    def load(self) -> LoadInfo:
        return LoadInfo("e", "e-1", "cpu", comfyui_version=Version("0.3.75"), comfyui_commit=Version("f8b981ae"),
                        engine_tested=True)


def test_whether_the_engine_is_tested_stays_a_bool_its_version_and_commit_become_strings():
    info = Engine.load("tests.gpu_worker.test_engine:EngineBackend", CONTEXT).info
    assert info.engine_tested is True and type(info.comfyui_version) is str and type(info.comfyui_commit) is str


class FailingAfterMaking(ScriptedBackend):
    closed: list[str] = []

    def load(self) -> LoadInfo:
        raise RuntimeError("the engine did not start")

    def close(self) -> None:
        FailingAfterMaking.closed.append("closed")


def test_a_backend_that_fails_to_load_is_closed_and_the_failure_propagates():
    with pytest.raises(RuntimeError, match="the engine did not start"):
        Engine.load("tests.gpu_worker.test_engine:FailingAfterMaking", CONTEXT)
    assert FailingAfterMaking.closed == ["closed"]


def test_no_compute_capability_for_the_cpu():
    assert compute_capability("cpu") is None


def test_a_load_failure_propagates_for_the_worker_to_report():
    with pytest.raises(FileNotFoundError):
        engine("load_fails")


def test_success():
    outcome = engine("ok").run(INPUTS, threading.Event())
    assert outcome.error is None and outcome.output.image == b"img"


@pytest.mark.parametrize(
    "behaviour, code, words",
    [
        ("job_error", "invalid_input", "garment_image"),
        ("oom", "out_of_memory", "host out of memory"),
        ("torch_oom", "out_of_memory", "CUDA out of memory"),
        ("cancel", "cancelled", "cancelled"),
        ("bug", "backend_error", "RuntimeError: a bug in the backend"),
    ],
)
def test_failures_map_onto_contract_error_codes(behaviour, code, words):
    outcome = engine(behaviour).run(INPUTS, threading.Event())
    assert outcome.output is None
    assert outcome.error.code == code and words in outcome.error.message


def test_out_of_memory_frees_the_backend_caches_and_the_engine_goes_on():
    e = engine("oom")
    e.run(INPUTS, threading.Event())
    assert e.backend.freed == 1
    e.backend.behaviour = "ok"
    assert e.run(INPUTS, threading.Event()).output is not None


def test_a_job_cancelled_before_it_starts_never_reaches_the_backend():
    cancelled = threading.Event()
    cancelled.set()
    e = engine("bug")
    assert e.run(INPUTS, cancelled).error.code == "cancelled"


class OddOutputBackend(ScriptedBackend):
    """Returns outputs in loose types (numpy ints, memoryview) or plainly wrong ones."""

    def run(self, inputs, cancelled):
        import numpy

        if self.behaviour == "loose_types":
            return JobOutput(memoryview(b"img"), "image/png", numpy.int64(3), numpy.int32(2), numpy.float32(1.5))
        if self.behaviour == "no_content_type":
            return JobOutput(b"img", None, 1, 1, inference_ms=1.0)
        if self.behaviour == "made_up_code":
            raise JobError("model_on_holiday", "gone fishing")
        return super().run(inputs, cancelled)


def odd(behaviour: str) -> Engine:
    return Engine.load("tests.gpu_worker.test_engine:OddOutputBackend", CONTEXT._replace(settings={"behaviour": behaviour}))


def test_loose_output_types_are_normalised_for_the_wire():
    output = odd("loose_types").run(INPUTS, threading.Event()).output
    assert output == JobOutput(b"img", "image/png", 3, 2, 1.5)
    assert type(output.image) is bytes and type(output.width) is int and type(output.inference_ms) is float


def test_a_wrong_output_is_a_backend_error_not_a_dead_job_thread():
    outcome = odd("no_content_type").run(INPUTS, threading.Event())
    assert outcome.error.code == "backend_error" and "content type" in outcome.error.message


def test_error_codes_outside_the_contract_become_backend_error():
    outcome = odd("made_up_code").run(INPUTS, threading.Event())
    assert outcome.error.code == "backend_error"
    assert outcome.error.message == "model_on_holiday: gone fishing"
