"""Decoding the job's images in full, and encoding the result."""

from __future__ import annotations

import io

from PIL import Image, ImageFile

from gpu_worker.engine import JobError
from gpu_worker.jpeg_data import missing_data

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Speed over size: the GPU slot stays busy until the output is encoded. PNG level 1 is
# several times faster than the default 6 for ~10-20 % more bytes.
ENCODE_OPTIONS = {
    "png": {"format": "PNG", "compress_level": 1},
    "jpeg": {"format": "JPEG", "quality": 95},
    "webp": {"format": "WEBP", "quality": 90, "method": 0},
}


def decode(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """Fully decode to RGB; a corrupt or truncated image is the job's `invalid_input`.

    Pillow must never fill in missing data: its process-wide LOAD_TRUNCATED_IMAGES is set
    back to False here (ComfyUI's image helpers switch it on while they retry a file), and
    a JPEG whose data cannot hold the size it claims is refused before libjpeg pads it
    with grey (see jpeg_data)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG", "WEBP")) as image:
            if image.width * image.height > max_pixels:
                raise JobError("invalid_input", f"{field}: {image.width}x{image.height} is over the pixel limit")
            if image.format == "JPEG" and (problem := missing_data(data)) is not None:
                raise JobError("invalid_input", f"{field}: {problem}")
            image.load()  # verify() misses truncated JPEGs; only a full load finds them
            return image.convert("RGB")
    except (JobError, MemoryError):
        raise  # an out-of-memory is the engine's to report, not bad input
    except Exception as exc:  # Pillow raises many types for broken data
        raise JobError("invalid_input", f"{field}: cannot decode the image: {exc}") from None


def encode(image: Image.Image, output_format: str) -> tuple[bytes, str]:
    options = ENCODE_OPTIONS.get(output_format)
    if options is None:
        raise JobError("invalid_input", f"unknown output format {output_format!r}")
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue(), CONTENT_TYPES[output_format]
