"""`gpu-server serve`, `gpu-server check-config` and `gpu-server spool list|replay`.

Exit codes: 0 clean stop, 2 configuration error (each problem on stderr with its key
path), 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from supervisor import config as config_module

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-server", description="GPU node of the try-on platform")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "start the node"),
        ("check-config", "validate the configuration file and exit"),
        ("spool", "list the spool's entries, or move dead letters back to be sent again"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--config",
            metavar="PATH",
            help=f"YAML file (default: ${config_module.PATH_ENV} or {config_module.DEFAULT_PATH})",
        )
        if name == "spool":
            sub.add_argument("action", choices=("list", "replay"), help="replay: dead letters back to the spool")
            sub.add_argument("job_ids", nargs="*", metavar="JOB_ID", help="replay only these jobs' dead letters")
    return parser


def _load(path_arg: str | None) -> config_module.LoadedConfig | None:
    path = config_module.resolve_path(path_arg)
    try:
        return config_module.load(path)
    except config_module.ConfigError as exc:
        print(f"gpu-server: configuration error in {path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_CONFIG
    if args.command == "spool":
        from supervisor import spool_admin

        return spool_admin.main(loaded.spool_dir, args.action, args.job_ids)
    if args.command == "check-config":
        cfg = loaded.config
        print(
            f"{loaded.path}: ok (node_id={cfg.node_id}, backend={cfg.worker.backend}, "
            f"listen={cfg.server.host}:{cfg.server.port})"
        )
        return 0
    return serve(loaded)


def serve(loaded: config_module.LoadedConfig) -> int:
    from ipc import jsonlog
    from supervisor.node import Node

    jsonlog.setup(loaded.config.node_id, "supervisor", loaded.config.logging.level)
    node = Node(loaded)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with Sanic on Linux
        return asyncio.run(node.run())
    return uvloop.run(node.run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
