"""A JPEG's coded data measured against the size its header claims."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from gpu_worker.jpeg_data import missing_data
from tests.support import images


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


NOISE = Image.frombytes("RGB", (320, 240), os.urandom(320 * 240 * 3))
# Flat images compress to almost nothing: with optimised Huffman tables a sequential JPEG
# takes barely more than the 2 bits a block that the check asks for.
VALID = {
    "baseline": jpeg(NOISE),
    "progressive": jpeg(NOISE, progressive=True),
    "restart-markers": jpeg(NOISE, restart_marker_blocks=4),
    "flat-6000-optimised": jpeg(Image.new("RGB", (6000, 6000), (9, 9, 9)), optimize=True),
    "flat-gray-6000-optimised": jpeg(Image.new("L", (6000, 6000), 9), optimize=True),
    "flat-6000-progressive": jpeg(Image.new("RGB", (6000, 6000), (9, 9, 9)), progressive=True, optimize=True),
    "flat-444": jpeg(Image.new("RGB", (3000, 3000), (9, 9, 9)), subsampling=0, optimize=True),
    "cmyk": jpeg(Image.new("CMYK", (500, 300), (1, 2, 3, 4))),
    "odd-size": jpeg(Image.new("RGB", (17, 33), (1, 2, 3))),
    "tiny": jpeg(Image.new("RGB", (1, 1))),
}


@pytest.mark.parametrize("data", VALID.values(), ids=VALID.keys())
def test_complete_jpegs_pass(data):
    assert missing_data(data) is None


@pytest.mark.parametrize(
    "data",
    [
        images.jpeg_claiming(6000, 6000),
        images.jpeg_claiming(6000, 6000, jpeg(NOISE, progressive=True)),
        images.jpeg_claiming(1000, 1000),
        images.jpeg_claiming(6000, 6000, VALID["flat-gray-6000-optimised"][:20000] + b"\xff\xd9"),
    ],
    ids=["baseline-5kb", "progressive", "baseline-1000", "gray-cut-with-end-marker"],
)
def test_a_header_claiming_more_than_the_data_holds_is_caught(data):
    assert "ends early" in missing_data(data)


def test_components_never_coded_are_caught_but_missing_refinement_scans_are_not():
    data = jpeg(NOISE, progressive=True)
    sos = data.index(b"\xff\xda")
    assert "never coded" in missing_data(data[:sos] + b"\xff\xd9")  # frame, tables, no scan
    # Only the first scan of a progressive JPEG (the DC of Y, Cb and Cr): a blurry but
    # complete image, which a progressive file may legally be.
    second_scan = data.index(b"\xff\xda", sos + 2)
    assert missing_data(data[:second_scan] + b"\xff\xd9") is None


@pytest.mark.parametrize("data", [b"", b"not a jpeg", images.person(fmt="PNG"), b"\xff\xd8\xff"])
def test_anything_it_does_not_understand_is_left_to_the_decoder(data):
    assert missing_data(data) is None
