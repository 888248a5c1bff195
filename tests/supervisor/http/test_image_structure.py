"""The structure walk before Pillow (supervisor/http/image_structure.py): each limit refuses
just past it and allows at it, what Pillow is then given says what the whole file says, and
a crafted file costs the walk a few steps whatever it holds."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from supervisor.http import image_structure as structure
from supervisor.http.image_structure import MAX_FILL_BYTES, MAX_SCANS, MAX_SEGMENTS, Malformed, TooComplex
from tests.support import images

BASE_JPEG = images.solid(64, 64, "JPEG")
BASE_SEGMENTS = images.segment_count(BASE_JPEG)  # APP0, DQT, SOF, DHT...: they count too


def pillow_reads(data: bytes) -> tuple[str, tuple[int, int], str, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.size, image.mode, Image.Image.getexif(image).get(0x0112, 1)


@pytest.mark.parametrize("make", [
    lambda: images.solid(64, 48, "JPEG"),
    lambda: images.encode(images.Image.new("L", (40, 30)), "JPEG"),
    lambda: images.encode(images.Image.new("CMYK", (40, 30)), "JPEG"),
    lambda: images.encode(images.Image.new("RGB", (40, 30)), "JPEG", progressive=True),
    lambda: images.with_orientation(images.solid(30, 20, "JPEG"), 6),
    lambda: images.encode(images.Image.new("RGB", (40, 30)), "JPEG", xmp=b'<x tiff:Orientation="8"/>'),
    lambda: images.jpeg_with_segments(50, b"a comment"),
], ids=["rgb", "grey", "cmyk", "progressive", "exif", "xmp", "comments"])
def test_what_pillow_is_given_of_a_jpeg_says_what_the_whole_file_says(make):
    data = make()
    assert pillow_reads(structure.jpeg_essentials(data)) == pillow_reads(data)


@pytest.mark.parametrize("make", [
    lambda: images.solid(64, 48, "PNG"),
    lambda: images.encode(images.Image.new("LA", (40, 30)), "PNG"),
    lambda: images.encode(images.Image.new("P", (40, 30)), "PNG"),
    lambda: images.with_orientation(images.solid(30, 20, "PNG"), 6),
    lambda: images.png_with_chunks(50),
], ids=["rgb", "grey-alpha", "palette", "exif", "text-chunks"])
def test_what_pillow_is_given_of_a_png_says_what_the_whole_file_says(make):
    data = make()
    assert pillow_reads(structure.png_essentials(data)) == pillow_reads(data)


def test_jpeg_fill_bytes_up_to_the_limit():
    structure.jpeg_essentials(images.jpeg_with_fill(MAX_FILL_BYTES))
    with pytest.raises(TooComplex, match="fill or junk bytes"):
        structure.jpeg_essentials(images.jpeg_with_fill(MAX_FILL_BYTES + 1))


def test_junk_between_segments_counts_with_the_fill_bytes():
    structure.jpeg_essentials(images.jpeg_with_junk(MAX_FILL_BYTES))
    with pytest.raises(TooComplex, match="fill or junk bytes"):
        structure.jpeg_essentials(images.jpeg_with_junk(MAX_FILL_BYTES + 1))
    with pytest.raises(TooComplex):  # the two together
        structure.jpeg_essentials(images.jpeg_with_fill(MAX_FILL_BYTES // 2 + 1, images.jpeg_with_junk(MAX_FILL_BYTES // 2)))


def test_jpeg_segments_before_the_image_data_up_to_the_limit():
    structure.jpeg_essentials(images.jpeg_with_segments(MAX_SEGMENTS - BASE_SEGMENTS))
    with pytest.raises(TooComplex, match="segments before its image data"):
        structure.jpeg_essentials(images.jpeg_with_segments(MAX_SEGMENTS - BASE_SEGMENTS + 1))


def test_jpeg_scans_up_to_the_limit():
    assert images.jpeg_with_scans(MAX_SCANS).count(b"\xff\xda") == MAX_SCANS
    structure.jpeg_essentials(images.jpeg_with_scans(MAX_SCANS))
    with pytest.raises(TooComplex, match=f"{MAX_SCANS + 1} scans"):
        structure.jpeg_essentials(images.jpeg_with_scans(MAX_SCANS + 1))


def test_scans_are_counted_to_the_images_end_not_in_what_follows_it():
    # A phone's multi-picture file: more JPEGs (a depth map, a gain map) after the first's EOI.
    progressive = images.jpeg_with_scans(MAX_SCANS)
    structure.jpeg_essentials(progressive + progressive)


def test_png_chunks_before_the_image_data_up_to_the_limit():
    structure.png_essentials(images.png_with_chunks(MAX_SEGMENTS - 1))  # IHDR is one
    with pytest.raises(TooComplex, match="chunks before its image data"):
        structure.png_essentials(images.png_with_chunks(MAX_SEGMENTS))


@pytest.mark.parametrize("damage", [
    lambda d: d[:40],  # cut inside a chunk
    lambda d: d[:33] + bytes([d[33] ^ 1]) + d[34:],  # a CRC that does not match
    lambda d: d[:12] + b"I\x00DR" + d[16:],  # not a chunk type
])
def test_a_damaged_png_header_is_malformed(damage):
    with pytest.raises(Malformed):
        structure.png_essentials(damage(images.png_with_chunks(3)))


@pytest.mark.parametrize("data", [
    BASE_JPEG[:2] + b"\xff\x10" + BASE_JPEG[2:],  # not a marker
    BASE_JPEG[:4] + b"\xff\xff" + BASE_JPEG[6:],  # a length running past the end
    BASE_JPEG[:2] + struct.pack(">BBH", 0xFF, 0xFE, 1) + BASE_JPEG[2:],  # a length under 2
    BASE_JPEG[:BASE_JPEG.index(b"\xff\xc0")],  # no frame header
])
def test_a_damaged_jpeg_header_is_malformed(data):
    with pytest.raises(Malformed):
        structure.jpeg_essentials(data)


def test_a_jpeg_cut_off_after_its_header_still_has_one():
    # The worker's decode finds it short; its header is whole (as Pillow sees it too).
    cut = BASE_JPEG[: BASE_JPEG.index(b"\xff\xda") + 20]
    assert pillow_reads(structure.jpeg_essentials(cut)) == pillow_reads(BASE_JPEG)


def test_what_pillow_is_given_stays_small_whatever_the_file_holds():
    # 19 MiB of Photoshop blocks in 300 APP13 segments: Pillow parses none of them.
    essentials = structure.jpeg_essentials(images.jpeg_with_photoshop_blocks(300))
    assert len(essentials) < 1000
    assert pillow_reads(essentials)[:2] == ("JPEG", (64, 64))
