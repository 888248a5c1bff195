"""A stand-in backend for bench/gpu_duty.py: the worker's real prepare and finish stages on
a phone photo, around a model stage that holds the "GPU" for `model_s` by waiting (as a CPU
thread waits for CUDA kernels), so the bench measures what the stages around the model cost
the GPU's time, on a machine without one.

prepare: decode the person photo upright, scaled to ~1 MP (as the ComfyUI backend hands
the graph), and the garment; model: wait `model_s`, the ~1 MP person picture is the output;
finish: resize it to the photo's size and encode (images.output_size `person`).

On a checkout before the worker had stages, the same class runs as one `run` (all of it
then inside the GPU slot): the bench's before and after use this one file.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

from gpu_worker import imaging
from gpu_worker.engine import BackendContext, JobCancelled, JobInputs, JobOutput, LoadInfo

try:
    from gpu_worker.engine import StagedRun
except ImportError:  # before the worker had stages: `run` is what the engine calls

    class StagedRun:  # type: ignore[no-redef]
        def run(self, inputs: JobInputs, cancelled: threading.Event) -> JobOutput:
            return self.finish(self.model(self.prepare(inputs, cancelled), cancelled))  # type: ignore[attr-defined]


MODEL_PIXELS = 1024 * 1024


class _Prepared(NamedTuple):
    inputs: JobInputs
    person: imaging.Decoded
    decode_ms: float


class DutyBackend(StagedRun):
    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.model_s = float(context.settings.get("model_s", 2.0))

    def load(self) -> LoadInfo:
        return LoadInfo(backend="duty-stand-in", model_version=f"duty-{self.model_s:g}s", device="cpu")

    def prepare(self, inputs: JobInputs, cancelled: threading.Event) -> _Prepared:
        started = time.perf_counter()
        person = imaging.decode(inputs.person_image, "person_image", self.context.max_pixels, MODEL_PIXELS)
        imaging.decode(inputs.garment_image, "garment_image", self.context.max_pixels, MODEL_PIXELS)
        return _Prepared(inputs._replace(person_image=b"", garment_image=b""), person,
                         (time.perf_counter() - started) * 1000)

    def model(self, prepared: _Prepared, cancelled: threading.Event) -> Any:
        if cancelled.wait(self.model_s):  # the GPU's time: this thread only waits
            raise JobCancelled("cancelled")
        return prepared

    def finish(self, modelled: _Prepared) -> JobOutput:
        started = time.perf_counter()
        inputs = modelled.inputs
        image = imaging.sized_output(modelled.person.image, modelled.person, inputs.output_size)
        data, content_type = imaging.encode(image, inputs.output_format)
        return JobOutput(data, content_type, image.width, image.height, inference_ms=self.model_s * 1000,
                         decode_ms=modelled.decode_ms, encode_ms=(time.perf_counter() - started) * 1000)
