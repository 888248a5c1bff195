"""The reference backend on the CPU: a real torch pipeline, checked for what tests rely on."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from gpu_worker.backends.reference import ReferenceBackend
from gpu_worker.engine import BackendContext, JobCancelled, JobError, JobInputs
from tests.support import images

PERSON = images.person(96, 128)
GARMENT = images.garment(48, 60)


@pytest.fixture(scope="module")
def backend():
    b = ReferenceBackend(BackendContext("cpu", {"default_steps": 3}, 10**8, "."))
    info = b.load()
    assert info.backend == "reference" and info.device == "cpu" and info.model_version == "reference-1"
    assert info.torch_version and type(info.torch_version) is str
    return b


def run(backend, seed=1, steps=None, fmt="png", person=PERSON, garment=GARMENT, cancelled=None, output_size="person"):
    inputs = JobInputs("j", person, garment, seed, fmt, steps, output_size=output_size)
    return backend.run(inputs, cancelled or threading.Event())


def pixels(output) -> bytes:
    return Image.open(io.BytesIO(output.image)).convert("RGB").tobytes()


def test_output_has_the_person_images_size_and_the_requested_format(backend):
    for fmt, pil in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        out = run(backend, fmt=fmt)
        image = Image.open(io.BytesIO(out.image))
        assert image.format == pil and image.size == (96, 128) and (out.width, out.height) == (96, 128)
        assert out.inference_ms > 0 and out.decode_ms > 0 and out.encode_ms > 0


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_photo_turned_in_the_camera_gives_the_upright_photos_output(backend, orientation):
    upright = images.person(96, 128, "PNG")
    out = run(backend, person=images.taken_turned(upright, orientation))
    assert (out.width, out.height) == (96, 128)
    assert pixels(out) == pixels(run(backend, person=upright))


@pytest.mark.parametrize("output_size", ["person", "model"])
def test_the_reference_backend_works_at_the_upright_persons_size_so_both_output_sizes_agree(backend, output_size):
    out = run(backend, person=images.taken_turned(images.person(96, 128, "PNG"), 6), output_size=output_size)
    assert (out.width, out.height) == Image.open(io.BytesIO(out.image)).size == (96, 128)


def test_deterministic_from_the_seed(backend):
    assert pixels(run(backend, seed=5)) == pixels(run(backend, seed=5))
    assert pixels(run(backend, seed=5)) != pixels(run(backend, seed=6))


def test_the_garment_is_really_composited(backend):
    person_only = Image.open(io.BytesIO(PERSON)).convert("RGB").tobytes()
    assert pixels(run(backend)) != person_only


def test_more_steps_is_more_work_and_another_result(backend):
    assert pixels(run(backend, steps=1)) != pixels(run(backend, steps=20))


def test_cancellation_between_steps(backend):
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(JobCancelled):
        run(backend, steps=5, cancelled=cancelled)


def test_corrupt_input_is_invalid_input(backend):
    with pytest.raises(JobError) as caught:
        run(backend, person=images.truncated_jpeg())
    assert caught.value.code == "invalid_input"


def test_a_garment_larger_than_the_person_still_fits(backend):
    out = run(backend, person=images.person(50, 40), garment=images.garment(400, 900))
    assert (out.width, out.height) == (50, 40)


def test_cuda_asked_for_without_cuda_is_a_load_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(JobError, match="CUDA is not available"):
        ReferenceBackend(BackendContext("cuda:0", {}, 10**8, ".")).load()
