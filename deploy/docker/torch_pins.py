"""Print the image's pip constraints: the project's constraints.txt with its torch,
torchvision and torchaudio lines replaced by the versions this Python already has.

Every pip install of the image is constrained by this, so the base image's torch stays (its
CUDA build: ComfyUI's packages name torch without a version, and nothing may replace it with
whatever PyPI serves) and everything else is the exact version the tests ran with.
constraints.txt pins the CPU torch of the build machines; on the image's base that line
would conflict with the base's own torch, so it gives way to the base's.

    python torch_pins.py [constraints.txt]    # without a file: the base's pins alone
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PINNED = ("torch", "torchvision", "torchaudio")
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def pins() -> list[str]:
    found = []
    for name in PINNED:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def without_base_packages(constraints: str) -> list[str]:
    """The constraint lines that do not name one of the base's packages (comments dropped)."""
    kept = []
    for line in constraints.splitlines():
        line = line.split("#", 1)[0].strip()
        match = REQUIREMENT_NAME.match(line)
        if match and canonical(match.group(1)) not in PINNED:
            kept.append(line)
    return kept


def main(argv: list[str]) -> int:
    found = pins()
    if not found or not found[0].startswith("torch=="):
        print("torch_pins: this Python has no torch; the base image must bring its CUDA torch", file=sys.stderr)
        return 1
    lines = without_base_packages(Path(argv[0]).read_text()) if argv else []
    print("\n".join(lines + found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
