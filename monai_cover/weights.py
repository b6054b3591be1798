# SPDX-License-Identifier: Apache-2.0
"""Load pretrained COVER weights into a user's network, reporting exactly which keys matched."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["LoadReport", "load_pretrained", "load_state_dict_file", "resolve_weights_path"]

logger = logging.getLogger(__name__)

#: keys of a checkpoint dict that may hold the model's state dict, tried in this order
STATE_DICT_KEYS = ("model", "state_dict", "network", "backbone", "network_def")


@dataclass
class LoadReport:
    """What :py:func:`load_pretrained` did.

    Attributes:
        loaded: destination keys that received a tensor.
        missing: destination keys with no source tensor (left as they were).
        unexpected: source keys that found no destination key (after prefix/mapping).
        mismatched: destination keys whose source tensor had another shape (not loaded), with both shapes.
        excluded: destination keys skipped by ``exclude``.
        source: where the weights came from.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    source: str = ""

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors from {self.source}: {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched, {len(self.excluded)} excluded"
        )


def resolve_weights_path(source: str | os.PathLike, model_file: str = "model.pt") -> Path:
    """The weights file for ``source``: a file as is; a bundle folder's ``models/<model_file>``;
    a folder that directly holds ``<model_file>`` (e.g. a ``models`` folder)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / "models" / model_file, path / model_file):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"no weights in folder {str(path)!r}: expected {str(path / 'models' / model_file)!r} (a bundle) "
            f"or {str(path / model_file)!r}."
        )
    raise FileNotFoundError(f"weights source {str(path)!r} does not exist.")


def load_state_dict_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", state_dict_key: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``; if the file holds a checkpoint dict,
    take ``state_dict_key`` (or the first of :py:data:`STATE_DICT_KEYS` present)."""
    obj = torch.load(str(path), map_location=map_location, weights_only=True)
    return _pick_state_dict(obj, state_dict_key, str(path))


def _pick_state_dict(obj, state_dict_key: str | None, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"{where}: expected a state dict (a mapping of tensors), got {type(obj).__name__}.")
    if state_dict_key is not None:
        if state_dict_key not in obj:
            raise KeyError(f"{where}: no key {state_dict_key!r}; top-level keys are {sorted(obj)[:20]}.")
        obj = obj[state_dict_key]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{where}: holds no tensors (top-level keys: {sorted(obj)[:20]}).")
    return tensors


def _as_patterns(exclude: str | Sequence[str] | None) -> list[re.Pattern]:
    if exclude is None:
        return []
    items = [exclude] if isinstance(exclude, str) else list(exclude)
    return [re.compile(p) for p in items]


def load_pretrained(
    network: torch.nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    prefix: str = "",
    source_prefix: str = "",
    mapping: Mapping[str, str] | None = None,
    exclude: str | Sequence[str] | None = None,
    strict: bool = False,
    map_location: str | torch.device = "cpu",
    state_dict_key: str | None = None,
    filter_func: Callable[[str, torch.Tensor], bool] | None = None,
) -> LoadReport:
    """Copy pretrained weights into ``network`` by key, and say which keys were loaded.

    Source keys are rewritten in this order: a leading ``"module."`` (DistributedDataParallel) is
    dropped; keys not starting with ``source_prefix`` are ignored and the prefix is stripped (e.g.
    ``source_prefix="backbone."`` to take the backbone out of a full ``CoverNet`` state dict);
    ``prefix`` is prepended (e.g. ``"encoder."`` when the pretrained net sits inside a wrapper);
    ``mapping`` renames whole keys (``{source_key_after_prefixes: destination_key}``).
    Destination keys matching any ``exclude`` regex (``re.search``) are skipped, and a tensor whose
    shape differs is reported as mismatched, not loaded (e.g. a final conv with another number of classes).

    Args:
        network: the module to load into (modified in place).
        source: a bundle folder (``models/model.pt`` is read), a weights file (a state dict, or a
            checkpoint dict holding one under ``state_dict_key``/``"model"``/``"state_dict"``...),
            or a state dict. Files are read with ``torch.load(weights_only=True)``.
        prefix: prepended to every source key.
        source_prefix: only source keys with this prefix are used, without it.
        mapping: explicit renames applied after the prefixes.
        exclude: regex or list of regexes of destination keys to leave untouched.
        strict: raise ``RuntimeError`` when any destination key is missing/mismatched or any source
            key is unexpected.
        map_location: ``torch.load``'s map_location.
        state_dict_key: key of the state dict inside a checkpoint dict.
        filter_func: ``(destination key, source tensor) -> bool``; ``False`` skips the key (counted as excluded).

    Returns:
        a :py:class:`LoadReport`; it is also logged (INFO) by the ``monai_cover.weights`` logger.

    Raises:
        ValueError: no source tensor matched any destination key: the message lists a few keys of
            each side so a ``prefix``/``source_prefix``/``mapping`` can be chosen.

    Example::

        from monai.networks.nets import BasicUNet
        import monai_cover

        net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=8, features=(32, 32, 64, 128, 256, 32))
        report = monai_cover.load_pretrained(net, "runs/cover_pretrain_3d", exclude="^final_conv")
        print(report.loaded, report.missing)
    """
    if isinstance(source, Mapping):
        src = _pick_state_dict(source, state_dict_key, "state dict")
        where = "a state dict"
    else:
        path = resolve_weights_path(source)
        src = load_state_dict_file(path, map_location=map_location, state_dict_key=state_dict_key)
        where = str(path)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if source_prefix:
            if not key.startswith(source_prefix):
                continue
            key = key[len(source_prefix) :]
        key = prefix + key
        if mapping and key in mapping:
            key = mapping[key]
        renamed[key] = value

    dst = network.state_dict()
    patterns = _as_patterns(exclude)
    report = LoadReport(source=where)
    to_load: dict[str, torch.Tensor] = {}
    for key, target in dst.items():
        if any(p.search(key) for p in patterns):
            report.excluded.append(key)
            continue
        if key not in renamed:
            report.missing.append(key)
            continue
        value = renamed[key]
        if filter_func is not None and not filter_func(key, value):
            report.excluded.append(key)
            continue
        if tuple(value.shape) != tuple(target.shape):
            report.mismatched[key] = (tuple(value.shape), tuple(target.shape))
            continue
        to_load[key] = value
        report.loaded.append(key)
    report.unexpected = [k for k in renamed if k not in dst]

    if not to_load:
        raise ValueError(
            f"load_pretrained: no weights from {where} match {type(network).__name__}: "
            f"{len(renamed)} source keys (e.g. {list(renamed)[:4]}), {len(dst)} network keys "
            f"(e.g. {list(dst)[:4]}), {len(report.mismatched)} shape mismatches. "
            "Set prefix=, source_prefix= or mapping= so the names line up."
        )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise RuntimeError(
            f"load_pretrained(strict=True): {report}; missing {report.missing[:10]}, unexpected "
            f"{report.unexpected[:10]}, mismatched {dict(list(report.mismatched.items())[:10])}."
        )
    result = network.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen: every key came from network.state_dict()
        raise RuntimeError(f"load_pretrained: unexpected keys while loading {result.unexpected_keys[:10]}.")
    logger.info("%s", report)
    for name, keys in (("missing", report.missing), ("unexpected", report.unexpected), ("excluded", report.excluded)):
        if keys:
            logger.info("%s keys (%d): %s%s", name, len(keys), keys[:20], " ..." if len(keys) > 20 else "")
    if report.mismatched:
        logger.info("shape-mismatched keys (source, network): %s", report.mismatched)
    return report
