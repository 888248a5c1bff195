"""Judging an upload from its header bytes only: format and dimensions, no decoding.

The full decode happens in the worker; here we only make sure the bytes claim to be a
JPEG, PNG or WebP of an acceptable size, which Pillow reads from the first few hundred
bytes in microseconds.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")

# We compare width x height with images.max_pixels ourselves; Pillow's own warning
# about big images would only add noise to stderr.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# Load the format plugins now rather than on the first request.
Image.init()


class ImageHeader(NamedTuple):
    format: str
    width: int
    height: int

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
            header = ImageHeader(image.format, *image.size)
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
