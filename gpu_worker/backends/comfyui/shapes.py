"""Where ComfyUI engines differ, each difference told by what the engine has, not by its version.

The backend was built on 0.3.75 (the vendored test engine); upstream (0.38.x, read from its
source) changed some of what an embedder relies on. Each function here takes what the engine
has (its parsed `args`, its `folder_paths` module, ...) and does the right thing for either
shape; the tests give each one both shapes. No engine import in this module.

- the executor's cache: `cache_ram` a float (0.3.75: GB of RAM headroom, 0 = off) or a list
  (upstream: `nargs='*'`, empty = the default RAM-pressure cache sized from the machine's RAM,
  `--cache-classic` for the classic one), and the cache sizes upstream's `main.py` computes;
- the fix-ups upstream's `main.py` applies to `args` after parsing (`high_ram` ->
  `cache_classic`, `disable_comfy_compiler` -> `disable_cuda_graphs`, `offline` ->
  `disable_partner_nodes`), done here because `main.py` never runs embedded;
- folders: every `set_<name>_directory` the engine's `folder_paths` has (upstream adds
  `previews`), so none points into the checkout;
- `fast: autotune`: upstream's `model_management` no longer turns on cudnn's benchmark
  itself (`main.py` does), so an embedder does it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

# Upstream main.py's RAM-pressure cache sizes (GB): active min(10, max(2, 10% of RAM)),
# inactive min(128, RAM).
ACTIVE_MIN_GB, ACTIVE_MAX_GB, ACTIVE_SHARE = 2.0, 10.0, 0.10
INACTIVE_MAX_GB = 128.0

# Upstream main.py: `if args.<a>: args.<b> = True` after parsing.
POST_PARSE_IMPLIES = (
    ("high_ram", "cache_classic"),
    ("disable_comfy_compiler", "disable_cuda_graphs"),
    ("offline", "disable_partner_nodes"),
)

# folder_paths setters (the engine's own defaults point into the checkout or site-packages).
FOLDER_NAMES = ("input", "output", "temp", "user", "previews")


class CacheChoice(NamedTuple):
    kind: str  # a name of the engine's execution.CacheType: CLASSIC, LRU, RAM_PRESSURE, NONE
    args: dict[str, float]  # the executor's cache_args


def choose_cache(args: Any, ram_bytes: int | None = None) -> CacheChoice:
    """The executor's cache as the engine's own `main.py` picks it from the options.

    0.3.75: `cache_ram` is a float (0: off), the classic cache is the default.
    Upstream: `cache_ram` is a list (empty: RAM pressure, sized from the machine's RAM; one
    value: the active size; two: active and inactive), `cache_classic` asks for the classic
    one, which is no longer the default."""
    lru = float(getattr(args, "cache_lru", 0) or 0)
    raw = getattr(args, "cache_ram", 0)
    if isinstance(raw, (list, tuple)):  # upstream's shape
        ram, inactive = _ram_sizes(raw, ram_bytes)
        cache_args = {"lru": lru, "ram": ram, "ram_inactive": inactive}
        if lru > 0:
            return CacheChoice("LRU", cache_args)
        if getattr(args, "cache_none", False):
            return CacheChoice("NONE", cache_args)
        if getattr(args, "cache_classic", False):
            return CacheChoice("CLASSIC", cache_args)
        return CacheChoice("RAM_PRESSURE", cache_args)
    ram = float(raw or 0)  # 0.3.75's shape
    cache_args = {"lru": lru, "ram": ram, "ram_inactive": 0.0}
    if lru > 0:
        return CacheChoice("LRU", cache_args)
    if ram > 0:
        return CacheChoice("RAM_PRESSURE", cache_args)
    if getattr(args, "cache_none", False):
        return CacheChoice("NONE", cache_args)
    return CacheChoice("CLASSIC", cache_args)


def _ram_sizes(values: list | tuple, ram_bytes: int | None) -> tuple[float, float]:
    total_gb = (ram_bytes if ram_bytes is not None else _machine_ram()) / 2**30
    active = min(ACTIVE_MAX_GB, max(ACTIVE_MIN_GB, ACTIVE_SHARE * total_gb))
    inactive = min(INACTIVE_MAX_GB, total_gb)
    if len(values) >= 1:
        active = float(values[0])
    if len(values) >= 2:
        inactive = float(values[1])
    return active, inactive


def _machine_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def post_parse_fixups(args: Any) -> list[str]:
    """What upstream's main.py sets after parsing, for the options this engine has; the
    options it set (0.3.75 has none of them: nothing happens)."""
    done = []
    for given, implied in POST_PARSE_IMPLIES:
        if getattr(args, given, False) and hasattr(args, implied) and not getattr(args, implied):
            setattr(args, implied, True)
            done.append(implied)
    return done


def set_folders(folder_paths: Any, make: Callable[[str], str]) -> list[str]:
    """Point each folder the engine has a setter for at `make(name)`; the names set."""
    done = []
    for name in FOLDER_NAMES:
        setter = getattr(folder_paths, f"set_{name}_directory", None)
        if setter is not None:
            setter(make(name))
            done.append(name)
    return done


def autotune_wanted(args: Any) -> bool:
    """`fast` includes `autotune` (the engine's PerformanceFeature, or its value)."""
    for feature in getattr(args, "fast", None) or ():
        if getattr(feature, "value", feature) == "autotune":
            return True
    return False


def apply_autotune(args: Any, torch: Any) -> bool:
    """Turn on cudnn's benchmark for `fast: autotune` where the engine's model_management
    did not (0.3.75 does it at import; upstream leaves it to main.py, which never runs
    embedded). Call after model_management is imported; whether it was done here."""
    if not autotune_wanted(args) or not torch.cuda.is_available() or not torch.backends.cudnn.is_available():
        return False
    if torch.backends.cudnn.benchmark:
        return False  # the engine did it
    torch.backends.cudnn.benchmark = True
    return True
