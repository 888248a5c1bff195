"""The GPU worker: a process of its own that loads the model once and runs jobs.

Started by the supervisor (`python -m gpu_worker`), never imported by the serving node.
`gpu-server check-config` reads a few torch-free modules (the ComfyUI backend's settings,
workflow and model-file checks) to check what a start would need.
"""
