"""Which physical GPU the worker computes on, named the way NVML can find it.

The worker's torch sees only the devices listed in CUDA_VISIBLE_DEVICES (inherited from
the supervisor), renumbered from 0; `worker.device` picks one of those. NVML ignores that
variable and numbers every GPU of the machine, so the worker's `cuda:N` must be mapped
back through the list to a machine index or a UUID. Reporting GPUs the worker does not
use would show another tenant's load as ours.

Caveat: CUDA numbers devices fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by
PCI bus. They agree on machines with one GPU model; set PCI_BUS_ID on mixed machines.
"""

from __future__ import annotations

import re

# An NVML index (int) or a UUID, possibly abbreviated as CUDA allows ("GPU-8932f937").
GpuRef = int | str

_CUDA = re.compile(r"^cuda(?::(\d+))?$")
_UUID_PREFIXES = ("GPU-", "MIG-")


def worker_gpus(device: str, cuda_visible_devices: str | None) -> list[GpuRef]:
    """The GPU(s) behind the worker's device: [] for cpu, else one index or UUID.

    `device` is `worker.device` (auto, cpu, cuda, cuda:N) or, once the worker is ready,
    the device it reported (`cuda`, `cuda:1`, `cpu`). `auto` counts as `cuda`: where NVML
    sees a GPU, torch normally does too, and the worker's own report settles it.
    """
    if device == "auto":
        device = "cuda"
    match = _CUDA.match(device)
    if match is None:
        return []
    ordinal = int(match.group(1) or 0)
    if cuda_visible_devices is None:
        return [ordinal]
    visible = parse_visible_devices(cuda_visible_devices)
    return [visible[ordinal]] if ordinal < len(visible) else []


def parse_visible_devices(value: str) -> list[GpuRef]:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: left to right, up to the first invalid entry."""
    refs: list[GpuRef] = []
    for item in value.split(","):
        item = item.strip()
        if item.isdigit():
            refs.append(int(item))
        elif item.startswith(_UUID_PREFIXES):
            refs.append(item)
        else:
            break  # "", "-1" or garbage: CUDA stops here, so the worker sees no more devices
    return refs
