"""`gpu-server serve`, `gpu-server check-config`, `gpu-server spool list|replay`, `--version`.

Exit codes: 0 clean stop, 2 configuration error (each problem on stderr with its key
path and line), 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from supervisor import build_info
from supervisor import config as config_module

EXIT_CONFIG = 2
CONFIG_HELP = (
    f"the YAML config file (default: ${config_module.PATH_ENV} when set, else "
    f"{config_module.DEFAULT_PATH} in the working directory)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-server",
        description="GPU node of the try-on platform",
        epilog=f"Every command reads one config file: --config PATH, else ${config_module.PATH_ENV}, "
        f"else {config_module.DEFAULT_PATH} in the working directory.",
    )
    parser.add_argument(
        "--version", action="version", version=f"gpu-server {build_info.version()} (git {build_info.git_commit()})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "start the node"),
        ("check-config", "check the config and what a start needs (files, folders); every problem at once"),
        ("spool", "list the spool's entries, or move dead letters back to be sent again"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
        if name == "spool":
            sub.add_argument("action", choices=("list", "replay"), help="replay: dead letters back to the spool")
            sub.add_argument("job_ids", nargs="*", metavar="JOB_ID", help="replay only these jobs' dead letters")
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    # argparse gives every JOB_ID to `job_ids` only when they come before the options:
    # `spool replay --config F ID` leaves ID over. Job ids are never options, so take them.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "spool" or args.action != "replay" or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.job_ids += extra
    if args.command == "spool" and args.action == "list" and args.job_ids:
        parser.error("spool list takes no job ids")
    return args


def _load(path_arg: str | None, command: str) -> config_module.LoadedConfig | None:
    missing = config_module.missing_default_message(path_arg)
    if missing is not None:
        print(f"gpu-server: {missing}", file=sys.stderr)
        return None
    path = config_module.resolve_path(path_arg)
    try:
        return config_module.load(path)
    except config_module.ConfigError as exc:
        problems = exc.details
        if command == "check-config" and exc.view is not None:
            # What start would find beyond the file (folders, the backend's files), as far
            # as the valid part of the file tells: every problem in one round.
            from supervisor import preflight

            partial = config_module.LoadedConfig(exc.view, path.resolve())
            problems = sorted(problems + preflight.run(partial), key=lambda p: p.line or 0)
        _print_problems(str(path), problems)
        return None


def _print_problems(path: str, problems: list) -> None:
    print(f"gpu-server: {len(problems)} configuration problem(s) in {path}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    loaded = _load(args.config, args.command)
    if loaded is None:
        return EXIT_CONFIG
    if args.command == "spool":
        from supervisor.delivery import spool_admin

        return spool_admin.main(loaded.spool_dir, args.action, args.job_ids, loaded.config.spool.rescan_s)
    if args.command == "check-config":
        return check_config(loaded)
    return serve(loaded)


def check_config(loaded: config_module.LoadedConfig) -> int:
    from supervisor import preflight

    problems = preflight.run(loaded)
    for warning in preflight.warnings(loaded):
        print(f"gpu-server: WARNING: {warning}", file=sys.stderr)
    if problems:
        _print_problems(str(loaded.path), problems)
        return EXIT_CONFIG
    cfg = loaded.config
    print(
        f"{loaded.path}: ok (node_id={cfg.node_id}, backend={cfg.worker.backend}, "
        f"listen={cfg.server.host}:{cfg.server.port}, spool={loaded.spool_dir})"
    )
    return 0


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
