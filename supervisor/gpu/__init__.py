"""What the supervisor reads of the GPUs: NVML and which GPUs the worker uses; never CUDA."""
