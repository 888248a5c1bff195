"""Decoding the job's images in full, upright and no larger than the model needs, and
encoding the result at the size the node promises."""

from __future__ import annotations

import io
import math
import time
import warnings
import zlib
from typing import NamedTuple

from PIL import ExifTags, Image, ImageFile

from gpu_worker.engine import JobError, JobInputs, JobOutput
from gpu_worker.jpeg_data import missing_data

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Speed over size: the encode is the largest CPU cost of a job (its finish stage). PNG level 1
# is several times faster than the default 6 for ~10-20 % more bytes; zlib's run-length
# strategy (Z_RLE, libpng's advice for speed) is faster still on a 12 MP output (8-40 % in
# bench/png_encode.py) and ~7 % smaller, and keeps flat areas small (Huffman-only does not).
# PNG is lossless: the same pixels whatever the option.
ENCODE_OPTIONS = {
    "png": {"format": "PNG", "compress_level": 1, "compress_type": zlib.Z_RLE},
    "jpeg": {"format": "JPEG", "quality": 95},
    "webp": {"format": "WEBP", "quality": 90, "method": 0},
}
OUTPUT_SIZES = ("person", "model")
# How a photo's EXIF orientation is undone: exactly the table of Pillow's
# ImageOps.exif_transpose, which ComfyUI's own LoadImage applies, so a workflow sees the
# same upright image from us as it would from a file. Any other value: nothing to undo.
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes resized as they are; any other (alpha, palette, CMYK, 16-bit) becomes RGB first,
# so alpha is dropped as LoadImage drops it (a resize of RGBA would premultiply it).
_RESIZABLE = ("RGB", "L")
# A damaged EXIF block is read as no orientation (below); Pillow's warning adds nothing.
warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)


class Decoded(NamedTuple):
    image: Image.Image  # RGB, upright, at most the pixels asked for
    width: int  # the upright image's full size, before any downscale: what a person sees
    height: int
    orientation: int  # the EXIF orientation undone (1: none)
    format: str

    def describe(self) -> dict:
        """For the log: the upright size, the orientation undone, the size the model gets."""
        return {
            "format": self.format, "width": self.width, "height": self.height,
            "orientation": self.orientation, "processed": list(self.image.size),
        }


def decode(data: bytes, field: str, max_pixels: int, within_pixels: int | None = None) -> Decoded:
    """Fully decode to RGB, upright (EXIF orientation applied), and, with `within_pixels`,
    scaled down to at most that many pixels; a corrupt or truncated image is the job's
    `invalid_input`.

    Memory: a large JPEG is decoded at 1/2, 1/4 or 1/8 scale straight away (libjpeg's DCT
    scaling, Pillow's `draft`), never at full size; other formats cannot be decoded
    scaled, so their 8-bit pixels are scaled down as soon as they are decoded, before
    anything else copies them (conversion, rotation, and the float tensor a graph wants).

    Pillow must never fill in missing data: its process-wide LOAD_TRUNCATED_IMAGES is set
    back to False here (ComfyUI's image helpers switch it on while they retry a file), and
    a JPEG whose data cannot hold the size it claims is refused before libjpeg pads it
    with grey (see jpeg_data)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        # Not `with`: closing an image frees its pixels, and the decoded pixels are what
        # we keep (a copy of 36 megapixels just to survive the close would double the peak).
        image = Image.open(io.BytesIO(data), formats=("JPEG", "PNG", "WEBP"))
        image_format, stored = str(image.format), image.size  # a draft changes image.size
        if image.width * image.height > max_pixels:
            raise JobError("invalid_input", f"{field}: {image.width}x{image.height} is over the pixel limit")
        if image_format == "JPEG" and (problem := missing_data(data)) is not None:
            raise JobError("invalid_input", f"{field}: {problem}")
        target = _size_within(image.size, within_pixels)
        if target is not None and image_format == "JPEG":
            image.draft("RGB", target)  # the smallest DCT scale at least `target` each way
        image.load()  # verify() misses truncated JPEGs; only a full load finds them
        orientation = _orientation(image)
        image = _rgb(image, target)
        if orientation in UPRIGHT:
            image = image.transpose(UPRIGHT[orientation])
    except (JobError, MemoryError):
        raise  # an out-of-memory is the engine's to report, not bad input
    except Exception as exc:  # Pillow raises many types for broken data
        raise JobError("invalid_input", f"{field}: cannot decode the image: {exc}") from None
    return Decoded(image, *_upright_size(stored, orientation), orientation, image_format)


def _upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    # 5 to 8 turn the image by a quarter: width and height swap.
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, as exif_transpose reads it; 1 where there is none, it
    is not one of 1 to 8 (exif_transpose ignores those too), or the EXIF block cannot be
    read (a damaged block does not make the picture unusable)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _size_within(size: tuple[int, int], within_pixels: int | None) -> tuple[int, int] | None:
    """The largest size of the same aspect with at most `within_pixels` pixels; None when
    the image is not larger than that."""
    width, height = size
    if within_pixels is None or width * height <= within_pixels:
        return None
    scale = math.sqrt(within_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _rgb(image: Image.Image, target: tuple[int, int] | None) -> Image.Image:
    """RGB at `target` (None: as decoded), with as few full-size copies as possible: an RGB
    image not resized is used as decoded (`convert` would copy it)."""
    if image.mode not in _RESIZABLE:
        image = image.convert("RGB")
    if target is not None and image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    return image if image.mode == "RGB" else image.convert("RGB")


def sized_output(image: Image.Image, person: Decoded, output_size: str) -> Image.Image:
    """The output at the size `images.output_size` promises: `person`, the upright person
    image's full size (a graph works at its own size, ~1 MP for Qwen); `model`, as made."""
    if output_size not in OUTPUT_SIZES:
        # Not the client's doing: the supervisor resolves it from the config.
        raise JobError("backend_error", f"unknown output size {output_size!r} (known: {', '.join(OUTPUT_SIZES)})")
    wanted = (person.width, person.height)
    if output_size == "model" or image.size == wanted:
        return image
    return image.resize(wanted, Image.Resampling.LANCZOS)


def encode(image: Image.Image, output_format: str) -> tuple[bytes, str]:
    options = ENCODE_OPTIONS.get(output_format)
    if options is None:
        raise JobError("invalid_input", f"unknown output format {output_format!r}")
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue(), CONTENT_TYPES[output_format]


# --- what a staged backend hands from stage to stage (engine.py) -----------------------------


class DecodedInputs(NamedTuple):
    """The prepare stage's result: a job's two images decoded (the job without its bytes)."""

    inputs: JobInputs
    person: Decoded
    garment: Decoded
    decode_ms: float


class ModelImage(NamedTuple):
    """The model stage's result: only what the finish stage needs (the decoded inputs go
    before it allocates its own)."""

    inputs: JobInputs  # without its images
    person: Decoded  # its upright size, without its pixels
    image: Image.Image  # as the model made it
    inference_ms: float
    decode_ms: float

    @classmethod
    def of(cls, prepared: DecodedInputs, image: Image.Image, inference_ms: float) -> ModelImage:
        return cls(prepared.inputs, prepared.person._replace(image=None), image, inference_ms, prepared.decode_ms)


def decode_inputs(inputs: JobInputs, max_pixels: int, within_pixels: int | None, log) -> DecodedInputs:
    """Both images, upright (`decode`), logged `inputs_decoded` on `log` (the backend's)."""
    started = time.perf_counter()
    person = decode(inputs.person_image, "person_image", max_pixels, within_pixels)
    garment = decode(inputs.garment_image, "garment_image", max_pixels, within_pixels)
    decode_ms = (time.perf_counter() - started) * 1000
    log.info("inputs_decoded", job_id=inputs.job_id, person_image=person.describe(),
             garment_image=garment.describe(), decode_ms=round(decode_ms, 1))
    # The encoded bytes are not needed from here on: they go now, not after the finish stage.
    return DecodedInputs(inputs._replace(person_image=b"", garment_image=b""), person, garment, decode_ms)


def finish_output(modelled: ModelImage) -> JobOutput:
    """The finish stage: the output at the promised size (`sized_output`), encoded."""
    started = time.perf_counter()
    inputs = modelled.inputs
    image = sized_output(modelled.image, modelled.person, inputs.output_size)
    data, content_type = encode(image, inputs.output_format)
    return JobOutput(
        image=data, content_type=content_type, width=image.width, height=image.height,
        inference_ms=modelled.inference_ms, decode_ms=modelled.decode_ms,
        encode_ms=(time.perf_counter() - started) * 1000,
    )
