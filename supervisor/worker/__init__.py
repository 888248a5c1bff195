"""The worker process as the supervisor sees it: the pure lifecycle core, the shell around it
(processes, ZeroMQ, timers), spawning, and why a worker ended."""
