"""Does a JPEG hold enough coded data for the size its header claims?

libjpeg, under Pillow, decodes a JPEG whose frame header was patched to 6000x6000 without
complaint when its data ends early with an end-of-image marker: it warns ("premature end
of data segment"), Pillow drops the warning, and the missing rows come out grey. Pillow
offers no strict mode (LOAD_TRUNCATED_IMAGES only covers data that stops without a
marker). So the scans are measured here against the least data their blocks can take:

- a sequential Huffman scan codes every 8x8 block with at least a DC code and an AC code
  (an end-of-block at least): 2 bits a block;
- a progressive Huffman scan of DC coefficients: at least 1 bit a block (first pass: a
  DC code; refinement: one raw bit); AC scans can skip runs of blocks, so no floor;
- every component must appear in a scan (progressive: in a first DC scan).

A scan with less data than that, or a component never coded, is a truncated image.
Arithmetic-coded and lossless JPEGs are left to the decoder (their floor is far lower).
Pure parsing, no decoding: microseconds.
"""

from __future__ import annotations

import struct
from math import ceil
from typing import NamedTuple

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
# Huffman frames this check understands: baseline, extended sequential, progressive.
SEQUENTIAL_FRAMES = (0xC0, 0xC1)
PROGRESSIVE_FRAMES = (0xC2,)
# Markers without a length field.
STANDALONE = {0x01, *range(0xD0, 0xD8), SOI, EOI}


class Component(NamedTuple):
    h: int  # horizontal sampling factor
    v: int  # vertical sampling factor


class Frame(NamedTuple):
    progressive: bool
    width: int
    height: int
    components: dict[int, Component]

    @property
    def h_max(self) -> int:
        return max(c.h for c in self.components.values())

    @property
    def v_max(self) -> int:
        return max(c.v for c in self.components.values())

    def blocks(self, ids: list[int]) -> int:
        """8x8 blocks a scan of these components codes (interleaved: whole MCUs)."""
        if len(ids) == 1:
            c = self.components[ids[0]]
            return ceil(ceil(self.width * c.h / self.h_max) / 8) * ceil(ceil(self.height * c.v / self.v_max) / 8)
        mcus = ceil(self.width / (8 * self.h_max)) * ceil(self.height / (8 * self.v_max))
        return mcus * sum(self.components[i].h * self.components[i].v for i in ids)


def missing_data(data: bytes) -> str | None:
    """Why this JPEG's coded data cannot hold its declared size, or None when it can (or
    when the file is not a JPEG this check understands: the decoder judges those)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    frame: Frame | None = None
    coded: set[int] = set()
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None  # not where a marker must be: the decoder will say what is wrong
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == EOI:
            break
        if marker in STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        pos += 2 + length
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in SEQUENTIAL_FRAMES + PROGRESSIVE_FRAMES:
                return None  # arithmetic coding, lossless, hierarchical: not measured
            frame = _frame(segment, marker in PROGRESSIVE_FRAMES)
            if frame is None:
                return None
        elif marker == SOS:
            if frame is None or len(segment) < 1:
                return None
            count = segment[0]
            ids = [segment[1 + 2 * i] for i in range(count)] if len(segment) >= 1 + 2 * count + 3 else []
            if not ids or any(i not in frame.components for i in ids):
                return None
            spectral_start = segment[1 + 2 * count]
            approx_high = segment[3 + 2 * count] >> 4
            end = _end_of_scan(data, pos)
            floor_bits = _floor_bits(frame, ids, spectral_start)
            if (end - pos) * 8 < floor_bits:
                return (
                    f"the image data ends early: {frame.width}x{frame.height} needs at least "
                    f"{ceil(floor_bits / 8)} bytes in a scan that has {end - pos}"
                )
            if not frame.progressive or (spectral_start == 0 and approx_high == 0):
                coded.update(ids)
            pos = end
    if frame is None:
        return None
    if frame.width and frame.height and coded != set(frame.components):
        return "the image data ends early: a colour component is never coded"
    return None


def _frame(segment: bytes, progressive: bool) -> Frame | None:
    if len(segment) < 6:
        return None
    _, height, width, count = struct.unpack_from(">BHHB", segment)
    if len(segment) < 6 + 3 * count or count == 0:
        return None
    components = {}
    for i in range(count):
        ident, sampling = segment[6 + 3 * i], segment[7 + 3 * i]
        h, v = sampling >> 4, sampling & 0x0F
        if not h or not v:
            return None
        components[ident] = Component(h, v)
    return Frame(progressive, width, height, components)


def _floor_bits(frame: Frame, ids: list[int], spectral_start: int) -> int:
    if not frame.width or not frame.height:
        return 0  # height given later (DNL marker): nothing to measure against
    if not frame.progressive:
        return 2 * frame.blocks(ids)
    return frame.blocks(ids) if spectral_start == 0 else 0


def _end_of_scan(data: bytes, pos: int) -> int:
    """Where a scan's entropy-coded data ends: at the first marker that is neither a
    stuffed 0xFF00 nor a restart marker (or at the end of the data)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos == -1 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos
