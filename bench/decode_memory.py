"""What decoding one large input costs the worker in memory, at full size and scaled down.

For each accepted format, a photo-sized image (default 6000x6000: images.max_pixels) is
decoded the way the comfyui backend hands it to a graph, each case in a fresh process:
- `full size`: decoded, converted to RGB and made ComfyUI's float tensor at full size
  (what the backend did before model.comfyui.input_max_pixels; the reference backend still
  decodes at full size);
- `scaled`: decoded within model.comfyui.input_max_pixels (a JPEG at a reduced DCT scale,
  other formats scaled down as soon as decoded), then made the float tensor.
Prints the peak resident memory above the process's own after its imports (the kernel's
high-water mark, VmHWM, reset first: Linux only), and the time.
`python bench/decode_memory.py --help`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORMATS = ("JPEG", "PNG", "WEBP")

# Run in a fresh interpreter per case: a process's peak never goes down.
CASE = """
import json, sys, time
sys.path.insert(0, {repo!r})
from gpu_worker import imaging
from gpu_worker.backends.comfyui.nodes import to_tensor
data = open({path!r}, "rb").read()
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark restarts from the resident memory now (not the imports' peak)
before = status("VmRSS")
started = time.perf_counter()
decoded = imaging.decode(data, "person_image", {max_pixels}, {within})
tensor = to_tensor(decoded.image)
print(json.dumps({{"peak_rise": status("VmHWM") - before, "seconds": time.perf_counter() - started,
                  "tensor": list(tensor.shape)}}))
"""


def measure(path: Path, max_pixels: int, within: int | None) -> dict:
    code = CASE.format(repo=str(REPO), path=str(path), max_pixels=max_pixels, within=within)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--input-max-pixels", type=int, default=4194304, help="model.comfyui.input_max_pixels")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.support.images import gradient

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            path = Path(tmp) / f"input.{fmt.lower()}"
            path.write_bytes(gradient(args.width, args.height, fmt))
            pixels = args.width * args.height
            for case, within in (("full size", None), ("scaled", args.input_max_pixels)):
                result = measure(path, pixels, within)
                rows.append({"format": fmt, "case": case, "bytes": path.stat().st_size, **result})
    print(f"one {args.width}x{args.height} input, decoded to ComfyUI's float tensor "
          f"(scaled: within {args.input_max_pixels} pixels)")
    print(f"{'format':<6} {'case':<10} {'file MB':>8} {'peak rise MiB':>14} {'seconds':>8}  tensor")
    for row in rows:
        print(f"{row['format']:<6} {row['case']:<10} {row['bytes'] / 1e6:>8.1f} {row['peak_rise'] / 2**20:>14.0f} "
              f"{row['seconds']:>8.2f}  {row['tensor']}")
    return rows


if __name__ == "__main__":
    main()
