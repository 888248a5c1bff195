"""Print `torch==X` (and torchvision, torchaudio) for the versions this Python already has.

The image installs ComfyUI's requirements and gpu-server with these as pip constraints, so
the base image's CUDA build of torch stays: ComfyUI's requirements.txt names torch without a
version, and nothing may replace it with whatever PyPI serves.
"""

from __future__ import annotations

import sys
from importlib import metadata

PINNED = ("torch", "torchvision", "torchaudio")


def pins() -> list[str]:
    found = []
    for name in PINNED:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def main() -> int:
    found = pins()
    if not found or not found[0].startswith("torch=="):
        print("torch_pins: this Python has no torch; the base image must bring its CUDA torch", file=sys.stderr)
        return 1
    print("\n".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
