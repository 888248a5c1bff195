"""Judging an upload from its header bytes only: format and dimensions, no decoding.

The full decode happens in the worker; here we only make sure the bytes claim to be a
JPEG, PNG or WebP of an acceptable size. A JPEG's or PNG's structure is walked first, in
bounded work at C speed (`image_structure`), and Pillow reads only the parts of it that say
what the image is; a WebP's header is read by libwebp (C) through Pillow.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

from PIL import ExifTags, Image, UnidentifiedImageError

from supervisor.http.image_structure import PNG_SIGNATURE, Malformed, TooComplex, jpeg_essentials, png_essentials

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")

# We compare width x height with images.max_pixels ourselves; Pillow's own warning
# about big images would only add noise to stderr.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# A damaged EXIF block is read as no orientation; any client could make Pillow say so.
warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
# Load the format plugins now rather than on the first request.
Image.init()


class ImageHeader(NamedTuple):
    format: str
    width: int  # as stored in the file: before the EXIF orientation is applied
    height: int
    # The EXIF orientation where the header carries it (JPEG, WebP; a PNG's eXIf chunk
    # before its pixel data), else 1. The worker applies it: 5 to 8 swap width and height,
    # which changes neither the pixel count nor the longer side, so the limits hold as judged.
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


class UnsupportedImage(Exception):
    pass


class TooManyPixels(Exception):
    pass


__all__ = ["ImageHeader", "TooComplex", "TooManyPixels", "UnsupportedImage", "read_header"]


def read_header(data: bytes, max_pixels: int, max_side: int | None = None) -> ImageHeader:
    """Raise UnsupportedImage (-> 415), TooComplex (-> 422: a structure over the limits) or
    TooManyPixels (-> 422): over `max_pixels`, or a side over `max_side` (a size some output
    format cannot hold)."""
    try:
        essentials = _essentials(data)
    except Malformed:
        raise UnsupportedImage("not a JPEG, PNG or WebP image") from None
    try:
        with Image.open(io.BytesIO(essentials), formats=ACCEPTED_FORMATS) as image:
            header = ImageHeader(image.format, *image.size, _orientation(image))
    except Image.DecompressionBombError as exc:
        # A header claiming an enormous image: a pixel-limit problem, not a format one.
        raise TooManyPixels(str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise UnsupportedImage("not a JPEG, PNG or WebP image") from None
    if header.pixels > max_pixels:
        raise TooManyPixels(
            f"{header.width}x{header.height} is {header.pixels} pixels, over the limit of {max_pixels}"
        )
    if max_side is not None and max(header.width, header.height) > max_side:
        raise TooManyPixels(
            f"{header.width}x{header.height}: a side over the limit of {max_side} pixels"
        )
    return header


def _essentials(data: bytes) -> bytes:
    """What Pillow is given: a JPEG or PNG cut to what says what it is; anything else as it
    is (a WebP, read in C, or bytes that Pillow will not take for any accepted format)."""
    if data.startswith(b"\xff\xd8\xff"):  # what Pillow takes for a JPEG
        return jpeg_essentials(data)
    if data.startswith(PNG_SIGNATURE):
        return png_essentials(data)
    return data


def _orientation(image: Image.Image) -> int:
    """From the metadata read with the header, never from the pixel data: the base class's
    getexif, because PNG's own would decode the whole image to look for a late eXIf chunk."""
    try:
        value = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except Exception:  # a damaged EXIF block: the worker decides (it treats it as none)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
