"""The PNG encode of a 12 MP output (the finish stage's largest cost), by encoder option.

Two pictures at a phone photo's size (3024x4032): a photo-like one, and a ~1 MP model output
resized up to it (what `images.output_size: person` encodes). For each option: the median
time of `--repeat` encodes, the size, and whether the pixels read back are the same.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import zlib
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gpu_duty import photo  # noqa: E402

OPTIONS = {
    "level 6 (Pillow's default)": {"compress_level": 6},
    "level 1": {"compress_level": 1},
    "level 1, Z_RLE (the node's)": {"compress_level": 1, "compress_type": zlib.Z_RLE},
    "level 1, Z_HUFFMAN_ONLY": {"compress_level": 1, "compress_type": zlib.Z_HUFFMAN_ONLY},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    src = Image.open(io.BytesIO(photo(3024, 4032, 88))).convert("RGB")
    upscaled = src.resize((768, 1024), Image.Resampling.LANCZOS).resize(src.size, Image.Resampling.LANCZOS)
    for label, image in (("photo-like 12 MP", src), ("1 MP output resized to 12 MP", upscaled)):
        pixels = image.tobytes()
        for name, options in OPTIONS.items():
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                buffer = io.BytesIO()
                image.save(buffer, "PNG", **options)
                times.append(time.perf_counter() - started)
            same = Image.open(io.BytesIO(buffer.getvalue())).tobytes() == pixels
            print(f"{label:30s} {name:30s} {statistics.median(times) * 1000:7.0f} ms  "
                  f"{buffer.tell() / 2**20:5.1f} MiB  same pixels: {same}", flush=True)


if __name__ == "__main__":
    main()
