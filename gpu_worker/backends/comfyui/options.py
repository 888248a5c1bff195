"""ComfyUI's own start-up options (`model.comfyui.options`): which the node lets an operator
set, checking them against the engine's parser, applying them, and reporting those in force.

The engine declares its options in `comfy/cli_args.py` (an argparse parser, `parser`, and
its result, `args`, which `comfy.model_management` reads when it is imported). An option is
named as there, underscored (`highvram`, `reserve_vram`, `fast`, `use_sage_attention`), and
given a YAML value: `true` for a switch, a number or a word for a value, a list for `fast`
(an empty list: every feature, as the engine's bare `--fast`). Every option of the engine is
allowed except those the node owns (OWNED, each with what to use instead), so a newer
engine's options work without a change here.

Pure: no torch and no engine import in this module. The worker hands it the engine's parser;
`gpu-server check-config` runs it in a child process (`python -m
gpu_worker.backends.comfyui.options ROOT`), so the supervisor imports nothing of the engine.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import importlib
import importlib.util
import json
import sys
from typing import Any, Iterable, Mapping

# Options the node sets itself, or that mean nothing without ComfyUI's own server: name ->
# what to use instead. Refused, so a setting never silently does nothing.
OWNED: dict[str, str] = {}


def _owned(reason: str, *names: str) -> None:
    OWNED.update(dict.fromkeys(names, reason))


_owned("the device is worker.device", "cpu", "cuda_device", "default_device", "directml", "oneapi_device_selector")
_owned("the node keeps its own per-start folders; models: model.comfyui.models_dir",
       "base_directory", "output_directory", "temp_directory", "input_directory", "user_directory")
_owned("use model.comfyui.extra_model_paths", "extra_model_paths_config")
_owned("use model.comfyui.cuda_malloc", "cuda_malloc", "disable_cuda_malloc")
_owned("use model.comfyui.custom_nodes", "disable_all_custom_nodes", "whitelist_custom_nodes")
_owned("the engine's log goes into the node's JSON log at logging.level", "verbose", "log_stdout", "dont_print_server")
_owned("the node sends no previews (they would cost sampling time for nobody)", "preview_method", "preview_size")
_owned("the node runs no ComfyUI server, UI or API nodes (server.* are the node's own)",
       "listen", "port", "tls_keyfile", "tls_certfile", "enable_cors_header", "max_upload_size", "multi_user",
       "enable_compress_response_body", "front_end_version", "front_end_root", "auto_launch",
       "disable_auto_launch", "windows_standalone_build", "quick_test_for_ci", "database_url",
       "default_hashing_function", "comfy_api_base", "disable_api_nodes", "disable_metadata")
# Upstream's (0.38.x) newer options of its server, its asset database, its manager and its
# UI's output layout: nothing of them runs embedded.
_owned("the node runs no ComfyUI server, asset database, manager or UI (newer engines' server options)",
       "disable_assets", "offline", "feature_flag", "enable_manager", "enable_manager_legacy_ui",
       "disable_manager_ui", "disabled_nodes_config", "date_based_output", "disable_partner_nodes")
_owned("use model.comfyui.models_dir", "models_directory")

# Options whose kernels come from a package of their own: the engine exits the process
# (exit(-1), no message to the supervisor) when it is missing, so it is checked first.
PACKAGES = {"use_sage_attention": "sageattention", "use_flash_attention": "flash_attn"}

_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}


class OptionsError(Exception):
    """The options cannot be used; `problems` name each option (`<key>.options.<name>: ...`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The engine's options by their underscored names (argparse's `dest`)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def allowed(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(name for name in actions(parser) if name not in OWNED)


def _switch(value: Any, digits: bool = False) -> bool | None:
    """A YAML switch value (also "true" from a ${VARIABLE}); None when it is not one."""
    if isinstance(value, bool):
        return value
    words = (_TRUE | {"1"}, _FALSE | {"0"}) if digits else (_TRUE, _FALSE)
    if isinstance(value, str) and value.strip().lower() in words[0] | words[1]:
        return value.strip().lower() in words[0]
    return None


def _argv(action: argparse.Action, value: Any) -> list[str]:
    """The command-line words for one option, as the engine's own start would read them."""
    flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
    if action.nargs == 0:  # a switch: store_true and friends
        switch = _switch(value, digits=True)
        if switch is None:
            raise ValueError(f"a switch: true or false, not {value!r}")
        return [flag] if switch else []
    if value is None:
        return []
    if action.nargs in ("*", "+"):
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(item, (dict, list, tuple)) for item in items):
            raise ValueError(f"a list of words, not {value!r}")
        return [flag, *map(str, items)]
    if isinstance(value, (dict, list, tuple)):
        raise ValueError(f"one value, not {value!r}")
    if action.nargs == "?" and _switch(value) is not None:
        return [flag] if _switch(value) else []  # `true`: the option given bare (its `const`)
    return [flag, str(value)]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse's own conversion and checks, raising instead of exiting the process."""
    saved = parser.exit_on_error
    parser.exit_on_error = False

    def error(message: str):
        raise argparse.ArgumentError(None, message)

    parser.error = error  # type: ignore[method-assign]
    try:
        namespace, extra = parser.parse_known_args(argv)
    finally:
        parser.exit_on_error = saved
        del parser.error  # back to the class's method
    if extra:
        raise argparse.ArgumentError(None, f"unrecognized arguments: {' '.join(extra)}")
    return namespace


def _unknown(name: str, parser: argparse.ArgumentParser) -> str:
    names = allowed(parser)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"not an option of this engine; {hint}valid: {', '.join(names)}"


def check(options: Mapping[str, Any], parser: argparse.ArgumentParser, key: str) -> tuple[list[str], list[str]]:
    """(problems, argv): every problem of the options, each naming its option, and the words
    that give them to the engine's parser."""
    by_name = actions(parser)
    problems: list[str] = []
    argv: list[str] = []
    given: dict[str, list[str]] = {}
    for name, value in options.items():
        where = f"{key}.options.{name}"
        if name in OWNED:
            problems.append(f"{where}: set by the node itself ({OWNED[name]})")
            continue
        action = by_name.get(name)
        if action is None:
            problems.append(f"{where}: {_unknown(name, parser)}")
            continue
        try:
            words = _argv(action, value)
            _parse(parser, words)
        except (ValueError, argparse.ArgumentError) as exc:
            message = str(exc).removeprefix("argument ")
            if isinstance(action.type, type) and issubclass(action.type, enum.Enum):
                message += f" (valid: {', '.join(str(e.value) for e in action.type)})"
            problems.append(f"{where}: {message}")
            continue
        given[name] = words
        argv += words
    for group in parser._mutually_exclusive_groups:
        names = [a.dest for a in group._group_actions]
        chosen = [n for n in names if given.get(n)]
        if len(chosen) > 1:
            problems.append(f"{key}.options: {' and '.join(chosen)} exclude each other (one of: {', '.join(names)})")
    return problems, argv


def apply(options: Mapping[str, Any], parser: argparse.ArgumentParser, args: argparse.Namespace, key: str) -> None:
    """Set the options on the engine's `args`, or raise OptionsError naming each bad one.
    Must run before `comfy.model_management` is imported: it reads them then."""
    problems, argv = check(options, parser, key)
    if problems:
        raise OptionsError(problems)
    parsed = _parse(parser, argv)
    for name in options:
        setattr(args, name, getattr(parsed, name))
    # What cli_args.py does to its own result after parsing, for these options: `fast` as
    # a set (absent: none; given bare, an empty list here: every feature).
    if "fast" in options:
        features = actions(parser)["fast"].type  # the engine's PerformanceFeature enum
        args.fast = set() if parsed.fast is None else set(parsed.fast) if parsed.fast else set(features)
    if "force_fp16" in options and args.force_fp16:
        args.fp16_unet = True


def missing_packages(options: Mapping[str, Any], key: str, import_them: bool = True) -> list[str]:
    """The options that need a package which does not import (`import_them`) or is not
    installed (check-config, which imports nothing heavy); each names the package."""
    problems = []
    for name, package in PACKAGES.items():
        if not _switch(options.get(name, False), digits=True):
            continue
        if not import_them:
            if importlib.util.find_spec(package) is None:
                problems.append(f"{key}.options.{name}: needs the package {package!r}, which is not installed")
            continue
        try:
            importlib.import_module(package)
        except Exception as exc:  # ImportError, or a broken build failing its own import
            problems.append(f"{key}.options.{name}: needs the package {package!r}, which does not import here "
                            f"({type(exc).__name__}: {exc})")
    return problems


def in_force(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every option whose value differs from the engine's default (the operator's and the
    node's own, `cpu` say), as JSON-ready values."""
    defaults = parser.parse_args([])
    if defaults.fast is None:
        defaults.fast = set()  # as cli_args.py leaves it
    return {
        name: _plain(getattr(args, name))
        for name in actions(parser)
        if hasattr(args, name) and getattr(args, name) != getattr(defaults, name, None)
    }


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (set, frozenset, list, tuple)):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --- check-config's child process ------------------------------------------------------


def check_in_engine(root: str, options: Mapping[str, Any], key: str) -> list[str]:
    """What the worker would refuse, judged by the engine's parser at `root` (imports only
    its `comfy/cli_args.py`: argparse); packages are looked up, not imported."""
    sys.path.insert(0, root)
    from comfy import cli_args  # type: ignore[import-not-found]

    problems, _ = check(options, cli_args.parser, key)
    return problems + missing_packages(options, key, import_them=False)


def main(argv: Iterable[str] | None = None) -> int:
    """`python -m gpu_worker.backends.comfyui.options ROOT KEY` with the options as JSON on
    stdin: prints {"problems": [...]}."""
    root, key = list(argv if argv is not None else sys.argv[1:])
    options = json.load(sys.stdin)
    print(json.dumps({"problems": check_in_engine(root, options, key)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
