"""The only bridge between the supervisor and the GPU worker.

Both processes import this package; it must stay free of torch, CUDA and Sanic.
"""
