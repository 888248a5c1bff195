from __future__ import annotations

import pytest

from supervisor.http.images import TooManyPixels, UnsupportedImage, read_header
from tests.support import images


@pytest.mark.parametrize("fmt, expected", [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP")])
def test_accepted_formats_are_judged_from_the_bytes(fmt, expected):
    header = read_header(images.solid(30, 20, fmt), 10_000)
    assert header == (expected, 30, 20, 1)
    assert header.pixels == 600


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_the_exif_orientation_is_read_with_the_header_and_the_size_stays_as_stored(fmt):
    header = read_header(images.with_orientation(images.solid(30, 20, fmt), 6), 10_000)
    assert header == (fmt, 30, 20, 6)


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_quarter_turn_changes_neither_limit(orientation):
    # Stored 16383x2: upright 2x16383; the longer side and the pixel count are the same.
    data = images.with_orientation(images.encode(images.Image.new("RGB", (16383, 2)), "PNG"), orientation)
    assert read_header(data, 32766, 16383).orientation == orientation
    with pytest.raises(TooManyPixels):
        read_header(data, 32765, 16383)
    with pytest.raises(TooManyPixels):
        read_header(data, 36_000_000, 16382)


def test_the_header_read_never_decodes_a_pngs_pixels_to_find_a_late_exif_chunk(monkeypatch):
    from PIL import ImageFile

    data = images.with_orientation(images.solid(30, 20, "PNG"), 3)
    # PNG's own getexif loads the whole image to look past the pixel data; ours does not.
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the pixels were decoded"))
    assert read_header(data, 10_000).orientation == 3


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # pytest resets the module's filter
def test_a_damaged_exif_block_is_no_orientation_and_no_refusal():
    data = images.encode(images.Image.new("RGB", (6, 4)), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    assert read_header(data, 100).orientation == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", images.gif(), images.encode(images.Image.new("RGB", (4, 4)), "BMP"), b"\x89PNG\r\n\x1a\n" + b"\0" * 20],
)
def test_anything_else_is_unsupported(data):
    with pytest.raises(UnsupportedImage):
        read_header(data, 10_000)


def test_pixel_limit_is_inclusive():
    read_header(images.solid(100, 100), 10_000)
    with pytest.raises(TooManyPixels, match="10100 pixels"):
        read_header(images.solid(101, 100), 10_000)


def test_decompression_bomb_header_is_a_pixel_problem_not_a_format_one():
    with pytest.raises(TooManyPixels):
        read_header(images.png_claiming(30000, 30000), 36_000_000)


def test_a_truncated_jpeg_still_has_a_readable_header():
    # Only the worker's full decode can tell; the header check lets it through.
    assert read_header(images.truncated_jpeg(), 10**8).format == "JPEG"


def test_side_limit_is_inclusive_and_judged_apart_from_the_pixel_limit():
    assert read_header(images.png_claiming(16383, 1), 36_000_000, 16383).width == 16383
    for width, height in ((16384, 1), (1, 16384), (36_000_000, 1)):
        with pytest.raises(TooManyPixels, match="side over the limit of 16383"):
            read_header(images.png_claiming(width, height), 36_000_000, 16383)
