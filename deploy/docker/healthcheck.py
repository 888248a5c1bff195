"""The container's HEALTHCHECK: exit 0 when the node's HTTP process answers /health/live.

Liveness, not readiness: loading the model takes minutes, and a container marked unhealthy
while it loads would be restarted by whatever watches the health. Readiness (/health) is for
the load balancer or orchestrator that sends jobs.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("GPU_SERVER_PORT", "8080")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: /health/live on port {port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
