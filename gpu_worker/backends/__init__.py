"""Backends of the worker; see gpu_worker.engine for the interface."""
