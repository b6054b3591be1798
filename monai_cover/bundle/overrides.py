# SPDX-License-Identifier: Apache-2.0
"""Strict command-line overrides for ``python -m monai.bundle run``.

MONAI passes every ``--key value`` pair it does not know straight into the config, so ``--epoch 2`` (for
``--epochs``) adds an unused key and is silently ignored, and Fire reads ``--amp false`` as the *string*
``'false'``, which is truthy. :py:func:`check_overrides`, the first item of every bundle config's ``initialize``,
looks at what was really passed:

1. it reads the command line of this process (``sys.argv``, parsed as MONAI's Fire front end parses it) and, when
   it is ``monai.bundle run`` (or ``run_workflow``, also under ``torchrun``), the config files named by
   ``--config_file`` (and the pairs of an ``--args_file``);
2. every override key must exist in those files: top-level keys exactly; ``a#b#c`` down to the first missing part,
   which may only be new where the parent is a component (``_target_``: a new argument) or an empty dict (a kwargs
   dict such as ``method_loss_kwargs``). An unknown key is an error naming the closest key (``--epoch`` -> did you
   mean ``--epochs``?). MONAI's own run arguments (``config_file``, ``meta_file``, ``logging_file``, ``run_id``,
   ``init_id``, ``final_id``, ``args_file``, ``workflow_name``, ``workflow_type``, ``properties_path``,
   ``tracking`` and, with ``--tracking``, its settings) and ``_meta_#...`` keys are left alone;
3. values are checked against the config's ``override_checks`` (``"bool"``, ``"int"``, ``"number"``, ``"list"``,
   ``"str"``, ``"dict"``, or a list of accepted values) and otherwise against the type of the default in the file
   (a literal ``8`` wants an integer, ``[32, 32, 32]`` a list, ``true`` a boolean). Booleans accept
   ``true/false/True/False/1/0``; the configs read them through :py:func:`as_bool`.

All problems are reported at once in one :py:class:`OverrideError`, before anything else runs (no data is read, no
lock taken, no file written). ``--strict_overrides false`` turns the errors into warnings (to add a key on purpose).
Outside a bundle command line (``ConfigWorkflow`` in Python, tests) nothing is checked.

On the command line, errors a user can fix (bad overrides, bad data, a locked output folder) also end the output
with one ``ERROR: ...`` line after the traceback (:py:func:`install_error_hook`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COMMON_OVERRIDE_CHECKS",
    "MONAI_RUN_ARGS",
    "OverrideError",
    "as_bool",
    "bundle_command_line",
    "check_overrides",
    "command_line_config_files",
    "install_error_hook",
]

logger = logging.getLogger(__name__)

#: arguments of ``monai.bundle run`` / ``run_workflow`` / ``ConfigWorkflow`` that are not config keys
MONAI_RUN_ARGS = (
    "config_file",
    "meta_file",
    "logging_file",
    "run_id",
    "init_id",
    "final_id",
    "args_file",
    "workflow_name",
    "workflow_type",
    "properties_path",
    "tracking",
)
#: checks every bundle shares, for keys whose default does not show the type (expressions) or that take a few values;
#: a config's ``override_checks`` adds to them and wins where both name a key (the 2-D bundles' ``modality``)
COMMON_OVERRIDE_CHECKS: dict[str, Any] = {
    "amp": "bool",
    "resume": "bool",
    "pretrained": "bool",
    "pad_small": "bool",
    "strict_overrides": "bool",
    "keep_freed_memory": "bool",
    "num_workers": "int",
    "batch_size": "int",
    "num_classes": "int",
    "in_channels": "int",
    "patch_size": "list",
    "features": "list",
    "spacing": "list",
    "class_names": "list",
    "modality": ["", "CT", "MR", "MRI"],
    "intensity": ["auto", "ct", "mri", "none"],
    "dataset_type": ["auto", "cache", "persistent"],
    "on_bad_file": ["error", "skip"],
    "nonfinite": ["error", "replace"],
    "amp_dtype": ["bfloat16", "float16"],
}
_COMMANDS = ("run", "run_workflow")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_TYPES = ("bool", "int", "number", "list", "str", "dict")


class OverrideError(ValueError):
    """A command-line override that matches no config key, or a value of the wrong type."""

    user_error = True


def as_bool(value: Any, name: str = "value") -> bool:
    """``value`` as a boolean: ``True``/``False``, ``1``/``0`` and the strings ``true/false/True/False/1/0`` (also
    ``yes/no/on/off``), as passed on a command line (Fire reads ``--amp false`` as the string ``'false'``).

    Raises:
        OverrideError: anything else, naming ``name``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise OverrideError(f"--{name}: expected a boolean (true/false/True/False/1/0), got {value!r}.")


def _is_bundle_main(path: str) -> bool:
    parts = Path(path).parts
    return len(parts) >= 3 and parts[-3:] == ("monai", "bundle", "__main__.py")


def bundle_command_line(argv: Sequence[str] | None = None) -> dict | None:
    """The ``{key: value}`` pairs of a ``python -m monai.bundle run ...`` command line (values parsed as Fire parses
    them: ``8`` -> int, ``[1,2]`` -> list, ``false`` -> the string ``'false'``), or ``None`` when ``argv``
    (default ``sys.argv``) is not one. Positional arguments come as ``"_positional"``."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or not _is_bundle_main(argv[0]) or argv[1] not in _COMMANDS:
        return None
    args = argv[2:]
    try:
        from fire import parser as fire_parser

        args, _ = fire_parser.SeparateFlagArgs(args)
        parse = fire_parser.DefaultParseValue
    except ImportError:  # pragma: no cover - fire is what runs monai.bundle
        parse = _literal
    pairs: dict[str, Any] = {}
    positional = []
    i = 0
    while i < len(args):  # Fire's rules for a function with **kwargs: --key value, --key=value, --flag
        token = args[i]
        if _is_flag(token):
            key = token.lstrip("-")
            if "=" in key:
                key, value = key.split("=", 1)
                pairs[key.replace("-", "_")] = parse(value)
            elif i + 1 == len(args) or _is_flag(args[i + 1]):
                pairs[key.replace("-", "_")] = True
            else:
                pairs[key.replace("-", "_")] = parse(args[i + 1])
                i += 1
        else:
            positional.append(parse(token))
        i += 1
    if positional:
        pairs["_positional"] = positional
    return pairs


def _config_files(pairs: Mapping) -> list[str]:
    config_files = pairs.get("config_file")
    if not config_files:
        return []
    if isinstance(config_files, str) and config_files.strip().startswith("["):
        config_files = _literal(config_files)
    return [str(config_files)] if isinstance(config_files, (str, os.PathLike)) else [str(c) for c in config_files]


def command_line_config_files(argv: Sequence[str] | None = None) -> list[str]:
    """The ``--config_file`` list of a ``python -m monai.bundle run ...`` command line (a single file or a list,
    as MONAI reads it), ``[]`` when ``argv`` (default ``sys.argv``) is not one or names none."""
    pairs = bundle_command_line(argv)
    return _config_files(pairs) if pairs else []


def _is_flag(token: str) -> bool:
    """Fire's test: ``--anything`` or ``-x...`` with a letter (so ``-500`` is a value)."""
    return token.startswith("--") or re.match(r"^-[a-zA-Z]", token) is not None


def _literal(value: str) -> Any:
    import ast

    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _matches_type(value: Any, spec: str) -> bool:
    if spec == "bool":
        try:
            as_bool(value)
            return True
        except OverrideError:
            return False
    if spec == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec == "list":
        return isinstance(value, (list, tuple))
    if spec == "dict":
        return isinstance(value, dict)
    if spec == "str":
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    raise ValueError(f"override_checks: unknown type {spec!r}; use one of {_TYPES} or a list of values.")


def _inferred_type(default: Any) -> str | None:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    if isinstance(default, (list, tuple)):
        return "list"
    return None  # strings, expressions ("$..."), references, dicts: no type from the default


_EXPECTED = {
    "bool": "a boolean (true/false/True/False/1/0)",
    "int": "an integer",
    "number": "a number",
    "list": 'a list, e.g. "[1,2,3]"',
    "str": "a string",
    "dict": "a dict, e.g. \"{'a': 1}\"",
}


def _check_value(key: str, value: Any, spec: Any, default: Any) -> str | None:
    if isinstance(spec, (list, tuple)):
        allowed = list(spec)
        norm = {str(a).lower(): a for a in allowed}
        if value in allowed or (isinstance(value, str) and value.lower() in norm):
            return None
        return f"--{key} {value!r}: accepted values are {', '.join(repr(a) for a in allowed)}."
    if not _matches_type(value, spec):
        shown = f" (default {default!r})" if not (isinstance(default, str) and default.startswith("$")) else ""
        return f"--{key} {value!r}: expected {_EXPECTED[spec]}{shown}."
    return None


def _suggest(word: str, options: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f" (did you mean --{prefix}{close[0]}?)" if close else ""


def _load_config(config_files: Sequence[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=list(config_files))
    return parser


def _unknown(key: str, parser) -> str | None:
    """Why ``key`` (``a#b#c``) is not an override of ``parser``'s config, or ``None`` when it is."""
    if key in parser:
        return None
    parts = key.split("#")
    top = parser.get()
    if parts[0] not in top:
        hint = _suggest(parts[0], [k for k in top if not k.startswith("_")])
        return f"--{key}: the config has no key {parts[0]!r}{hint}."
    for n in range(len(parts) - 1, 0, -1):
        parent_id = "#".join(parts[:n])
        if parent_id not in parser:
            continue
        parent = parser[parent_id]
        child = parts[n]
        if isinstance(parent, dict):
            if n == len(parts) - 1 and "_target_" in parent:
                return _not_an_argument(parent_id, parent["_target_"], child)  # a new argument of a component
            if n == len(parts) - 1 and not parent:
                return None  # a key of a kwargs dict such as method_loss_kwargs
            return (f"--{key}: {parent_id!r} has no key {child!r}"
                    f"{_suggest(child, [k for k in parent if not k.startswith('_')], parent_id + '#')}.")  # fmt: skip
        if isinstance(parent, list):
            return f"--{key}: {parent_id!r} is a list of {len(parent)} item(s), no index {child!r}."
        return f"--{key}: {parent_id!r} is {parent!r}, which has no parts to override."
    return f"--{key}: not in the config."  # pragma: no cover


def _not_an_argument(component_id: str, target: Any, name: str) -> str | None:
    """Why ``name`` cannot be an argument of the component ``_target_`` (``None`` when it can, or when the target's
    signature cannot be read or takes ``**kwargs``)."""
    import inspect

    from monai.utils import optional_import

    if not isinstance(target, str) or target.startswith(("$", "@", "%")):
        return None
    module, _, attr = target.rpartition(".")
    obj, found = optional_import(module, name=attr) if module else (None, False)
    if not found:
        return None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return None
    if name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    names = [p for p in params if p != "self"]
    return f"--{component_id}#{name}: {target} takes no argument {name!r}{_suggest(name, names, component_id + '#')}."


def install_error_hook() -> None:
    """Make an uncaught error a user can fix (an exception with ``user_error = True``, also as the cause of MONAI's
    ``RuntimeError: Failed to evaluate ...``) end the run with one line, ``ERROR: <its message>``, on stderr. The
    traceback, 50-odd lines of MONAI's config resolution that bury the cause, goes to
    ``<temp dir>/monai_cover_last_error.log`` (named on the line before) instead; ``MONAI_COVER_DEBUG=1`` prints it
    too. Other errors keep Python's own output. Installed once, on a bundle command line."""
    if getattr(sys.excepthook, "_monai_cover", False):
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        cause, seen = exc, set()
        while cause is not None and id(cause) not in seen and not getattr(cause, "user_error", False):
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        if cause is None or not getattr(cause, "user_error", False) or os.environ.get("MONAI_COVER_DEBUG"):
            previous(exc_type, exc, tb)
        if cause is None or not getattr(cause, "user_error", False):
            return
        import tempfile
        import traceback

        log = Path(tempfile.gettempdir()) / "monai_cover_last_error.log"
        try:
            log.write_text("".join(traceback.format_exception(exc_type, exc, tb)), encoding="utf-8")
            where = f"(traceback in {log}; MONAI_COVER_DEBUG=1 prints it)"
        except OSError:
            where = "(MONAI_COVER_DEBUG=1 prints the traceback)"
        sys.stderr.write(f"\n{where}\nERROR: {cause}\n")  # the cause last: what a terminal shows
        sys.stderr.flush()

    hook._monai_cover = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def check_overrides(
    checks: Mapping[str, Any] | None = None,
    strict: Any = True,
    argv: Sequence[str] | None = None,
    docs: str | os.PathLike | None = None,
) -> dict:
    """Check the overrides of this process's ``monai.bundle run`` command line against the config files it names
    (see the module docstring); a no-op returning ``{}`` outside such a command line.

    Args:
        checks: ``{top-level key: "bool" | "int" | "number" | "list" | "str" | "dict" | [accepted values]}``, for
            keys whose default does not show the type (expressions such as ``amp``) or that take a few values; added
            to (and winning over) :py:data:`COMMON_OVERRIDE_CHECKS`.
        strict: errors (``True``) or warnings (``False``); read with :py:func:`as_bool`.
        argv: the command line (default ``sys.argv``).
        docs: where the overrides are documented, named in the error (default: the first config file's
            ``../docs/README.md``).

    Returns:
        the overrides, ``{key: value as parsed}``.

    Raises:
        OverrideError: every unknown key and wrong value, in one message.
    """
    pairs = bundle_command_line(argv)
    if pairs is None:
        return {}
    install_error_hook()
    pairs.pop("_positional", None)
    if pairs.get("args_file"):
        from monai.bundle import ConfigParser

        from_file = ConfigParser.load_config_file(str(pairs["args_file"]))
        pairs = {**{str(k): v for k, v in dict(from_file).items()}, **pairs}
    config_files = _config_files(pairs)
    if not config_files:
        return {}
    parser = _load_config(config_files)
    ignore = set(MONAI_RUN_ARGS)
    if pairs.get("tracking"):
        from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

        ignore |= set(DEFAULT_EXP_MGMT_SETTINGS["mlflow"]["configs"])
    checks = {**COMMON_OVERRIDE_CHECKS, **dict(checks or {})}
    problems = []
    overrides = {}
    shown = []
    for key, value in pairs.items():
        if key in ignore or key.startswith("_meta_"):
            continue
        overrides[key] = value
        shown.append(f"{key}={value!r}")
        why = _unknown(key, parser)
        if why:
            problems.append(why)
            continue
        if "#" in key or value is None:  # nested values are the component's business; None is dropped by MONAI
            continue
        default = parser.get(key)
        spec = checks.get(key, _inferred_type(default))
        if spec is not None:
            why = _check_value(key, value, spec, default)
            if why:
                problems.append(why)
            elif spec == "bool" and not isinstance(value, bool):
                shown[-1] += f" (read as {as_bool(value)})"
    if problems:
        docs = docs or Path(config_files[0]).resolve().parent.parent / "docs" / "README.md"
        text = "\n".join(
            [f"{len(problems)} command-line override(s) rejected:"]
            + [f"  {p}" for p in problems]
            + [f"Every override is listed in {docs}; to add a new key on purpose pass --strict_overrides false."]
        )
        if as_bool(pairs.get("strict_overrides", strict), "strict_overrides"):
            raise OverrideError(text)
        logger.warning("%s", text)
    logger.info("command-line overrides: %s", ", ".join(shown) or "none")
    return overrides
