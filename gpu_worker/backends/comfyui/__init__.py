"""The ComfyUI backend: the engine in-process, our nodes, the per-start working folder.

Import the modules, not this package: `options` runs as a child of check-config and must not
pull torch in."""
