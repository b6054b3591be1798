# SPDX-License-Identifier: Apache-2.0
"""What defines a trained model, recorded beside it (``models/model_settings.json``): its class names and number of
classes, input channels, widths, spacing, patch size and intensity scaling. Inference and evaluation take the class
names from it (never from the demo's defaults) and refuse settings that differ from it, naming both."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_cover.weights import atomic_write

from .overrides import OverrideError, bundle_command_line

__all__ = ["RUN_RECORD", "check_run_settings", "read_run_record", "run_setting", "write_run_record"]

#: the record's file name, in the run's ``models/`` folder beside ``model.pt``
RUN_RECORD = "model_settings.json"

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples as lists), so that ``(2, 2)`` and ``[2.0, 2.0]`` compare equal."""
    return json.loads(json.dumps(value, default=str))


def write_run_record(model_dir: str | os.PathLike, settings: Mapping[str, Any], enabled: bool = True) -> str | None:
    """Write ``settings`` to ``<model_dir>/model_settings.json`` (atomically); ``enabled=False`` (ranks other than
    0) writes nothing. Returns the path written."""
    if not enabled:
        return None
    text = json.dumps(_plain(dict(settings)), indent=4) + "\n"
    path = atomic_write(Path(model_dir) / RUN_RECORD, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return str(path)


def read_run_record(model_dir: str | os.PathLike) -> dict | None:
    """The record of the run whose models are in ``model_dir``, or ``None`` (a run trained before records existed).

    Raises:
        ValueError: a record that is not a JSON object (the file is named).
    """
    path = Path(model_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(data).__name__}.")
    return data


def run_setting(model_dir: str | os.PathLike, key: str, fallback: Any) -> Any:
    """The trained run's value of ``key`` when its record has one, else ``fallback`` (with a warning naming what is
    guessed)."""
    record = read_run_record(model_dir)
    if record is not None and key in record:
        return record[key]
    logger.warning("%s has no %s with %r: using %r from the config (the run was trained before records existed, or "
                   "elsewhere).", model_dir, RUN_RECORD, key, fallback)
    return fallback


def check_run_settings(model_dir: str | os.PathLike, settings: Mapping[str, Any], argv: list[str] | None = None,
                       ) -> dict | None:
    """Refuse to run inference or evaluation with settings other than those the model was trained with.

    Every key of the record is compared with ``settings`` (this run's values) and with this process's command-line
    overrides (e.g. ``--class_names`` that the config would not otherwise use); all differences are reported in one
    message naming both values and the override that matches the training. No record: nothing is checked.

    Returns:
        the record (or ``None``).

    Raises:
        OverrideError: one line per differing setting.
    """
    record = read_run_record(model_dir)
    if record is None:
        return None
    asked = dict(settings)
    for key, value in (bundle_command_line(argv) or {}).items():
        if key in record and value not in (None, "", []):
            asked[key] = value
    problems = []
    for key, trained in record.items():
        if key in asked and _plain(asked[key]) != _plain(trained):
            problems.append(f"  {key}: asked {_plain(asked[key])!r}, trained with {_plain(trained)!r} "
                            f"(--{key} {json.dumps(_plain(trained)).replace(' ', '')})")
    if problems:
        raise OverrideError(
            "\n".join([f"{len(problems)} setting(s) differ from the run that trained {Path(model_dir) / 'model.pt'} "
                       f"({Path(model_dir) / RUN_RECORD}):"] + problems
                      + ["Use the trained values (the overrides in brackets), or point --output_dir at the run "
                         "trained with yours."])
        )
    return record
