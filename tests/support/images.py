"""Images the tests make themselves."""

from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import Image, ImageDraw


def person(width: int = 384, height: int = 512, fmt: str = "JPEG") -> bytes:
    image = Image.new("RGB", (width, height), (200, 190, 180))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.4, height * 0.08, width * 0.6, height * 0.25), fill=(230, 200, 170))
    draw.rectangle((width * 0.3, height * 0.25, width * 0.7, height * 0.8), fill=(60, 80, 140))
    return encode(image, fmt)


def garment(width: int = 256, height: int = 300, fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width * 0.2, height * 0.1, width * 0.8, height * 0.9), fill=(200, 30, 60))
    return encode(image, fmt)


def solid(width: int, height: int, fmt: str = "PNG", color=(90, 120, 150)) -> bytes:
    """Large in pixels, tiny in bytes (compresses to almost nothing)."""
    return encode(Image.new("RGB", (width, height), color), fmt)


def gradient(width: int, height: int, fmt: str = "PNG") -> bytes:
    """Large in pixels, a few MB at most in bytes, yet not flat: a photo-sized input that
    passes images.max_bytes (36 MP of noise would be ~108 MB in any format)."""
    import numpy

    x = numpy.linspace(0, 255, width, dtype=numpy.float32)
    y = numpy.linspace(0, 255, height, dtype=numpy.float32)
    red = numpy.add.outer(y * 0.5, x * 0.5).astype(numpy.uint8)
    green = numpy.broadcast_to(x.astype(numpy.uint8), (height, width))
    blue = numpy.broadcast_to(y.astype(numpy.uint8)[:, None], (height, width))
    image = Image.fromarray(numpy.dstack([red, green, blue]))
    ImageDraw.Draw(image).rectangle((width * 0.3, height * 0.25, width * 0.7, height * 0.8), fill=(60, 80, 140))
    options = {"compress_level": 1} if fmt == "PNG" else {}
    return encode(image, fmt, **options)


def with_orientation(data: bytes, orientation: int) -> bytes:
    """The same pixels, stored as they are, tagged with an EXIF orientation (1 to 8)."""
    image = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    lossless = {"JPEG": {"quality": 100, "subsampling": 0}, "WEBP": {"lossless": True}}
    return encode(image, image.format, exif=exif.tobytes(), **lossless.get(image.format, {}))


# How to store an upright picture so that an orientation tag turns it upright again (the
# inverse of what the tag asks a viewer to do).
STORED_FOR = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the camera was turned a quarter clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def taken_turned(upright: bytes, orientation: int) -> bytes:
    """`upright` as a camera held another way stores it: the pixels turned, and the
    orientation tag that tells a viewer how to turn them back."""
    image = Image.open(io.BytesIO(upright))
    turn = STORED_FOR[orientation]
    stored = image.transpose(turn) if turn is not None else image.copy()
    return with_orientation(encode(stored, image.format), orientation)


def noise(width: int, height: int, fmt: str = "PNG") -> bytes:
    """Incompressible: about width x height x 3 bytes whatever the format."""
    return encode(Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)), fmt)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; the pixel data is a token few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    """A JPEG whose header parses but whose data stops half way."""
    data = person(fmt="JPEG")
    return data[: len(data) // 2]


def jpeg_claiming(width: int, height: int, data: bytes | None = None) -> bytes:
    """A complete small JPEG (a few KB, end marker included) whose frame header was patched
    to claim width x height: libjpeg runs out of data and pads the rest."""
    out = bytearray(data if data is not None else person(fmt="JPEG"))
    pos = 2
    while pos + 4 <= len(out):
        marker = out[pos + 1]
        (length,) = struct.unpack_from(">H", out, pos + 2)
        if marker in (0xC0, 0xC1, 0xC2):  # SOFn: length, precision, height, width
            struct.pack_into(">HH", out, pos + 5, height, width)
            return bytes(out)
        pos += 2 + length
    raise ValueError("no frame header found")


def gif() -> bytes:
    return encode(Image.new("P", (8, 8)), "GIF")


# A person image that makes the reference backend work for a few seconds at 100 steps
# (1024 x 1024 pixels, a few kilobytes): long enough to be "still running" in a test.
LONG_JOB_PERSON = solid(1024, 1024)
LONG_JOB_CONFIG = {"steps": 100}


# --- hostile structures: valid images a parser must walk a long way through ----------------


def _segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def _after_soi(data: bytes, insert: bytes) -> bytes:
    return data[:2] + insert + data[2:]


def jpeg_with_fill(fill: int, data: bytes | None = None) -> bytes:
    """A valid JPEG with `fill` 0xFF fill bytes before its first marker after SOI (allowed
    by the standard; Pillow walks them one by one)."""
    return _after_soi(data or solid(64, 64, "JPEG"), b"\xff" * fill)


def jpeg_with_junk(junk: int, data: bytes | None = None) -> bytes:
    """A JPEG with `junk` bytes between two segments (0xFF 0x00 pairs and plain bytes),
    which Pillow skips."""
    data = data or solid(64, 64, "JPEG")
    return _after_soi(data, (b"\xff\x00\x01" * (junk // 3 + 1))[:junk])


def jpeg_with_segments(count: int, payload: bytes = b"x", data: bytes | None = None) -> bytes:
    """A JPEG with `count` extra comment segments (COM) before its frame header."""
    return _after_soi(data or solid(64, 64, "JPEG"), _segment(0xFE, payload) * count)


def jpeg_with_photoshop_blocks(segments: int, data: bytes | None = None) -> bytes:
    """A JPEG with `segments` full APP13 segments, each packed with tiny Photoshop resource
    blocks: within every structural limit, but Pillow parses each block in Python."""
    block = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", 0)
    payload = b"Photoshop 3.0\x00" + block * ((65_000 - 14) // len(block))
    return _after_soi(data or solid(64, 64, "JPEG"), _segment(0xED, payload) * segments)


def segment_count(data: bytes) -> int:
    """How many segments a JPEG has before its first scan (SOS not counted)."""
    pos, count = 2, 0
    while data[pos + 1] != 0xDA:
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
        count += 1
    return count


def jpeg_with_scans(scans: int, width: int = 64, height: int = 64) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has `scans` scans (each one
    a pass of the decoder over the whole image)."""
    data = encode(Image.open(io.BytesIO(gradient(width, height))).convert("RGB"), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    have = data.count(b"\xff\xda")
    if scans < have:
        raise ValueError(f"a progressive JPEG of this size has {have} scans already")
    return data[:end] + data[last:end] * (scans - have) + data[end:]


def png_with_chunks(count: int, data: bytes | None = None) -> bytes:
    """A PNG with `count` tiny ancillary text chunks before its image data."""
    data = data or solid(64, 64, "PNG")
    ihdr_end = 8 + 12 + struct.unpack_from(">I", data, 8)[0]
    return data[:ihdr_end] + _chunk(b"tEXt", b"k\x00v") * count + data[ihdr_end:]
