"""Judging an upload from its header bytes only: format and dimensions, no decoding.

The full decode happens in the worker; here we only make sure the bytes claim to be a
JPEG, PNG or WebP of an acceptable size, which Pillow reads from the first few hundred
bytes in microseconds.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

from PIL import ExifTags, Image, UnidentifiedImageError

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


def read_header(data: bytes, max_pixels: int, max_side: int | None = None) -> ImageHeader:
    """Raise UnsupportedImage (-> 415) or TooManyPixels (-> 422): over `max_pixels`, or a
    side over `max_side` (a size some output format cannot hold)."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
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


def _orientation(image: Image.Image) -> int:
    """From the metadata read with the header, never from the pixel data: the base class's
    getexif, because PNG's own would decode the whole image to look for a late eXIf chunk."""
    try:
        value = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except Exception:  # a damaged EXIF block: the worker decides (it treats it as none)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
