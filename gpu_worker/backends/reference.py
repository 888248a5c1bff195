"""The `reference` backend: a small, real torch pipeline for development and tests.

NOT a try-on model. It pastes the garment onto the person image and feathers the seam,
deterministically from the seed, so that everything around a model (decoding, devices,
steps, cancellation, timings, encoding) is exercised on a laptop CPU or a GPU:

1. (prepare) decode both images, upright (EXIF orientation applied), at full size (a corrupt
   input fails the job as `invalid_input`);
2. (model, to 4) cut the garment from its background (distance to the garment's corner colour);
3. scale and place it on the torso area; size and offset jitter with the seed;
4. `steps` passes of a 5x5 Gaussian over the mask, each re-blending the image, so the
   work, and the time a job takes, grow with `steps`; cancellation is checked between
   passes, and each pass is reported as a step (`progress`);
5. (finish) resize to the promised size and encode in the requested format.
"""

from __future__ import annotations

import threading
import time

from gpu_worker import imaging, progress
from gpu_worker.engine import (
    BackendContext, JobCancelled, JobError, JobInputs, JobOutput, LoadInfo, StagedRun, compute_capability,
)
from ipc.jsonlog import EventLog

events = EventLog("gpu_worker.reference")

VERSION = "1"
DEFAULT_STEPS = 8


class ReferenceBackend(StagedRun):
    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.default_steps = int(context.settings.get("default_steps", DEFAULT_STEPS))
        self.torch = None
        self.device = None
        self.kernel = None

    def load(self) -> LoadInfo:
        import torch

        self.torch = torch
        self.device = _resolve_device(torch, self.context.device)
        g = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        kernel = torch.outer(g, g)
        self.kernel = (kernel / kernel.sum()).view(1, 1, 5, 5).to(self.device)
        self._warm_up()
        return LoadInfo(
            backend="reference",
            model_version=f"reference-{VERSION}",
            device=str(self.device),
            torch_version=str(torch.__version__),  # TorchVersion is a str subclass
            gpu_compute_capability=compute_capability(str(self.device)),
        )

    def _warm_up(self) -> None:
        """First-use costs (kernel selection, CUDA context) belong to start-up, not a job."""
        torch = self.torch
        person = torch.rand(3, 64, 64, device=self.device)
        garment = torch.rand(3, 32, 32, device=self.device)
        self._composite(person, garment, torch.Generator().manual_seed(0), 2, threading.Event())
        self._synchronize()

    def free_memory(self) -> None:
        if self.torch is not None and self.device is not None and self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    # Three stages (engine.py): decode, the torch loop, resize and encode; the worker runs
    # them overlapped, one job in each.

    def prepare(self, inputs: JobInputs, cancelled: threading.Event) -> imaging.DecodedInputs:
        # Upright, at full size: a development stand-in whose pixels tests check exactly
        # (the comfyui backend scales large inputs down; this one keeps them as they are).
        return imaging.decode_inputs(inputs, self.context.max_pixels, None, events)

    def model(self, prepared: imaging.DecodedInputs, cancelled: threading.Event) -> imaging.ModelImage:
        from PIL import Image

        torch = self.torch
        inputs = prepared.inputs
        steps = inputs.steps or self.default_steps
        t1 = time.perf_counter()
        with torch.inference_mode():
            person_t = self._to_tensor(prepared.person.image)
            garment_t = self._to_tensor(prepared.garment.image)
            generator = torch.Generator().manual_seed(inputs.seed)
            result = self._composite(person_t, garment_t, generator, steps, cancelled)
            pixels = result.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        # Made at the upright person's size, so `person` and `model` sizes are the same here.
        return imaging.ModelImage.of(prepared, Image.fromarray(pixels), (time.perf_counter() - t1) * 1000)

    def finish(self, modelled: imaging.ModelImage) -> JobOutput:
        return imaging.finish_output(modelled)

    def _to_tensor(self, image):
        import numpy

        array = numpy.array(image)  # a writable copy: torch will not share a read-only buffer
        return self.torch.from_numpy(array).to(self.device).permute(2, 0, 1).float().div_(255)

    def _composite(self, person, garment, generator, steps: int, cancelled: threading.Event):
        torch = self.torch
        F = torch.nn.functional
        _, height, width = person.shape
        u = torch.rand(4, generator=generator).tolist()
        # Garment box: 40-50 % of the person's width, at most 55 % of the height.
        _, gh, gw = garment.shape
        box_w = max(1, round(width * (0.40 + 0.10 * u[0])))
        box_h = max(1, round(box_w * gh / gw))
        if box_h > 0.55 * height:
            box_h = max(1, round(0.55 * height))
            box_w = max(1, min(width, round(box_h * gw / gh)))
        left = int((width - box_w) * (0.46 + 0.08 * u[1]))
        top = int(height * (0.20 + 0.06 * u[2]))
        box_h = min(box_h, height - top)
        scaled = F.interpolate(garment[None], size=(box_h, box_w), mode="bilinear", antialias=True, align_corners=False)[0]
        # Alpha: how far each garment pixel is from the garment's background (its corner).
        background = scaled[:, :1, :1]
        alpha = ((scaled - background).abs().sum(0) * 4.0).clamp_(0, 1)
        canvas = person.clone()
        canvas[:, top : top + box_h, left : left + box_w] = scaled
        mask = torch.zeros(1, 1, height, width, device=person.device)
        mask[0, 0, top : top + box_h, left : left + box_w] = alpha
        hard = mask.clone()
        out = person
        for step in range(steps):
            if cancelled.is_set():
                raise JobCancelled("cancelled between steps")
            # Feather the seam a little more each step, keeping the garment's core opaque.
            mask = torch.maximum(F.conv2d(mask, self.kernel, padding=2), hard * 0.98)
            out = torch.lerp(person, canvas, mask[0])
            progress.report(step + 1, steps)
        return out

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def _resolve_device(torch, wanted: str):
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(wanted)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise JobError("backend_error", f"worker.device is {wanted} but CUDA is not available to torch")
    return device
