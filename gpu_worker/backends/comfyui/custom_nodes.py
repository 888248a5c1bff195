"""Custom node packs (`model.comfyui.custom_nodes`): loaded by the engine, each outcome named.

The engine imports every pack of its `custom_nodes` folder paths (`nodes.init_extra_nodes`
with `init_custom_nodes=True`: the root's `custom_nodes/`, plus the folders added here) and
only logs a pack that fails. For the time of that call the engine's loader of one pack is
wrapped, so each pack's outcome is recorded with the engine's own words for a failure: the
backend names every failed pack at start and, when the workflow then lacks a node type,
says which packs did not load.

Packs' `prestartup_script.py` files are not run (ComfyUI's `main.py` runs them before it
imports torch; a pack that needs one is not supported).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, NamedTuple


class PackOutcome(NamedTuple):
    path: str
    loaded: bool
    error: str | None  # the engine's last warning while loading it, for a pack that failed

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip(os.sep))


def add_folders(folder_paths: Any, folders: list[str]) -> None:
    """Packs are looked for in these folders too (after the root's custom_nodes/)."""
    for folder in folders:
        folder_paths.add_model_folder_path("custom_nodes", folder)


@contextlib.contextmanager
def recording(nodes: Any) -> Iterator[list[PackOutcome]]:
    """While the engine loads packs: the list it fills, one outcome per pack."""
    outcomes: list[PackOutcome] = []
    original = nodes.load_custom_node

    async def recorded(module_path, *args, **kwargs):
        if kwargs.get("module_parent", "custom_nodes") != "custom_nodes":
            return await original(module_path, *args, **kwargs)  # the engine's own extra nodes
        with _warnings() as caught:
            loaded = await original(module_path, *args, **kwargs)
        outcomes.append(PackOutcome(str(module_path), bool(loaded), None if loaded else _reason(caught)))
        return loaded

    nodes.load_custom_node = recorded  # looked up by name at each call: this takes its place
    try:
        yield outcomes
    finally:
        nodes.load_custom_node = original


def _reason(warnings: list[str]) -> str:
    """The exception's own line (`ImportError: ...`, the traceback's last) over the engine's
    summary that repeats the pack's path; otherwise the engine's last word on the pack."""
    own = [w for w in warnings if not w.startswith("Cannot import ")]
    return (own or warnings or ["the engine did not load it"])[-1]


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        lines = record.getMessage().strip().splitlines()
        if lines:
            self.into.append(lines[-1])  # a traceback's last line, or the message itself


@contextlib.contextmanager
def _warnings() -> Iterator[list[str]]:
    caught: list[str] = []
    handler = _Collect(caught)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield caught
    finally:
        root.removeHandler(handler)
