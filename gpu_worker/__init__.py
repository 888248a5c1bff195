"""The GPU worker: a process of its own that loads the model once and runs jobs.

Started by the supervisor (`python -m gpu_worker`), never imported by it.
"""
