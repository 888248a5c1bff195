from __future__ import annotations

import io

import pytest
from PIL import Image

from gpu_worker import imaging
from gpu_worker.engine import JobError
from tests.support import images


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_gives_a_loaded_rgb_image(fmt):
    image = imaging.decode(images.person(40, 60, fmt), "person_image", 10**6)
    assert image.mode == "RGB" and image.size == (40, 60)


def test_decode_converts_other_modes():
    rgba = images.encode(Image.new("RGBA", (5, 5), (1, 2, 3, 4)), "PNG")
    assert imaging.decode(rgba, "garment_image", 100).mode == "RGB"


@pytest.mark.parametrize("data", [images.truncated_jpeg(), b"garbage", images.gif(), images.png_claiming(30000, 30000)])
def test_broken_or_oversized_input_is_invalid_input_naming_the_field(data):
    with pytest.raises(JobError) as caught:
        imaging.decode(data, "garment_image", 36_000_000)
    assert caught.value.code == "invalid_input" and caught.value.message.startswith("garment_image")


@pytest.mark.parametrize("fmt, content_type, pil", [("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"),
                                                     ("webp", "image/webp", "WEBP")])
def test_encode(fmt, content_type, pil):
    data, got = imaging.encode(Image.new("RGB", (8, 8), (9, 9, 9)), fmt)
    assert got == content_type and Image.open(io.BytesIO(data)).format == pil


def test_encode_refuses_an_unknown_format():
    with pytest.raises(JobError):
        imaging.encode(Image.new("RGB", (1, 1)), "gif")


def test_a_jpeg_claiming_more_than_its_data_holds_is_invalid_input():
    with pytest.raises(JobError) as caught:
        imaging.decode(images.jpeg_claiming(6000, 6000), "person_image", 36_000_000)
    assert caught.value.code == "invalid_input" and "ends early" in caught.value.message


def test_pillow_never_fills_in_missing_data_even_when_a_library_asked_it_to(monkeypatch):
    from PIL import ImageFile

    # ComfyUI's image helpers switch this process-wide flag on while they retry a file.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(JobError) as caught:
        imaging.decode(images.truncated_jpeg(), "person_image", 36_000_000)
    assert caught.value.code == "invalid_input"
