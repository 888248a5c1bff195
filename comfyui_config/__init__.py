"""The ComfyUI backend's configuration, pure (msgspec, yaml; no torch, no engine): its settings,
the workflow file checked and shaped per job, the model files it names.

Read by both processes: the worker's backend runs it, and `gpu-server check-config` in the
supervisor judges a config with it before any start. It imports nothing of either side."""
