"""A JPEG's or PNG's structure walked before any parser sees it: bounded work at C speed.

Pillow reads a JPEG header in Python, byte by byte through fill bytes and junk and block by
block through every APPn segment (Photoshop's resource blocks, say), and a PNG chunk by
chunk: about 0.35 ms per KiB of a crafted file, on the HTTP process's event loop, where a
stall is every request's. Here each segment or chunk costs a few Python steps, runs of bytes
are skipped by `re` and `bytes.find`/`count` (C), and what a file may hold before its image
data is capped (the contract's limits). Pillow then opens only the parts that say what the
image is: for a JPEG its first EXIF and XMP APP1 and its frame header (SOF), for a PNG its
IHDR and eXIf: a few segments whatever the file holds.
"""

from __future__ import annotations

import re
import zlib

MAX_SEGMENTS = 1000  # JPEG segments or PNG chunks before the image data
MAX_FILL_BYTES = 64 * 1024  # JPEG fill bytes (0xFF padding) and junk between its segments
MAX_SCANS = 100  # a progressive JPEG has about 10; the decoder makes a pass over the image for each

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILL = re.compile(rb"\xff*")
_JUNK = re.compile(rb"(?:[^\xff]|\xff+\x00)*")
# Frame headers (SOF0-SOF15 but DHT, JPG and DAC), as Pillow's JPEG plugin reads them.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS, _APP1 = 0xDA, 0xE1
_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_EOI = b"\xff\xd9"


class Malformed(Exception):
    """Not a JPEG or PNG that can be read: a 415, as an unknown format."""


class TooComplex(Exception):
    """A structure over the limits: a 422 saying which."""


def jpeg_essentials(data: bytes) -> bytes:
    """The JPEG `data` cut down to SOI, its first EXIF and XMP APP1 and its last frame header
    (what says its size, mode and orientation), after checking the limits on the way to
    its image data and on its scans. Raise Malformed or TooComplex."""
    n = len(data)
    pos, segments, skipped = 2, 0, 0
    kept: dict[str, bytes] = {}
    scan_start = None
    while pos < n:
        # Junk where a marker belongs, which Pillow skips (other bytes, and 0xFF 0x00, an
        # escaped 0xFF out of place), then fill bytes: one C match each, never further than
        # the bytes left of the budget (and two more, to see it exceeded).
        budget = MAX_FILL_BYTES - skipped + 2
        junk_end = _JUNK.match(data, pos, min(n, pos + budget)).end()  # type: ignore[union-attr]
        fill_end = _FILL.match(data, junk_end, min(n, junk_end + budget)).end()  # type: ignore[union-attr]
        skipped += junk_end - pos + max(fill_end - junk_end - 1, 0)  # a marker's own 0xFF is no fill
        if skipped > MAX_FILL_BYTES:
            raise TooComplex(f"a JPEG with more than {MAX_FILL_BYTES} fill or junk bytes between its segments")
        if fill_end >= n:
            break  # cut off: Pillow, too, takes what came before
        marker, pos = data[fill_end], fill_end + 1
        if marker < 0xC0:  # 0x00 was junk
            raise Malformed(f"0xFF{marker:02X} is not a JPEG marker")
        if 0xD0 <= marker <= 0xD9:
            continue  # RSTn, SOI and EOI: no length
        stop = pos + int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 > n or stop < pos + 2 or stop > n:
            raise Malformed("a segment runs past the end of the file")
        if marker == _SOS:
            scan_start = stop
            break
        segments += 1
        if segments > MAX_SEGMENTS:
            raise TooComplex(f"a JPEG with more than {MAX_SEGMENTS} segments before its image data")
        if marker in _SOF:
            kept["sof"] = data[fill_end - 1:stop]
        elif marker == _APP1:
            for name, prefix in (("exif", _EXIF), ("xmp", _XMP)):
                if name not in kept and data.startswith(prefix, pos + 2):
                    kept[name] = data[fill_end - 1:stop]
        pos = stop
    if "sof" not in kept:
        raise Malformed("no frame header")
    if scan_start is not None:
        # 0xFF in coded data is always followed by 0x00 or a restart marker, so each
        # 0xFF 0xDA up to the image's end (EOI; another image may follow it, as in a phone's
        # multi-picture file) starts a scan. Counted in C, without walking the scans.
        eoi = data.find(_EOI, scan_start)
        scans = 1 + data.count(b"\xff\xda", scan_start, n if eoi < 0 else eoi)
        if scans > MAX_SCANS:
            raise TooComplex(f"a JPEG with {scans} scans, over the limit of {MAX_SCANS} (the decoder makes a pass for each)")
    return b"\xff\xd8" + kept.get("exif", b"") + kept.get("xmp", b"") + kept["sof"]


def png_essentials(data: bytes) -> bytes:
    """The PNG `data` cut down to its signature, IHDR and first eXIf chunk, ended as if its
    image data began there, after checking each chunk before the image data (at most
    MAX_SEGMENTS, each whole, its CRC right: what Pillow's own reading checks). Raise
    Malformed or TooComplex."""
    n = len(data)
    pos, chunks = len(PNG_SIGNATURE), 0
    kept: dict[bytes, bytes] = {}
    while True:
        if pos + 8 > n:
            raise Malformed("cut off before the image data")
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if not kind.isalpha():
            raise Malformed(f"{kind!r} is not a chunk type")
        if kind == b"IDAT":
            break
        chunks += 1
        if chunks > MAX_SEGMENTS:
            raise TooComplex(f"a PNG with more than {MAX_SEGMENTS} chunks before its image data")
        stop = pos + 12 + length
        if stop > n:
            raise Malformed(f"the {kind!r} chunk runs past the end of the file")
        if zlib.crc32(memoryview(data)[pos + 4:stop - 4]) != int.from_bytes(data[stop - 4:stop], "big"):
            raise Malformed(f"the {kind!r} chunk is damaged (CRC)")
        if kind in (b"IHDR", b"eXIf") and kind not in kept:
            kept[kind] = data[pos:stop]
        if kind == b"IEND":
            raise Malformed("no image data")
        pos = stop
    if b"IHDR" not in kept:
        raise Malformed("no IHDR chunk")
    empty_idat = b"\x00\x00\x00\x00IDAT" + zlib.crc32(b"IDAT").to_bytes(4, "big")
    return PNG_SIGNATURE + kept[b"IHDR"] + kept.get(b"eXIf", b"") + empty_idat
