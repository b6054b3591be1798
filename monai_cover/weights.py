# SPDX-License-Identifier: Apache-2.0
"""Load pretrained COVER weights into a user's network, reporting exactly which keys matched."""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "KNOWN_PREFIXES",
    "LoadReport",
    "RefusedPickleError",
    "WeightsMismatchError",
    "atomic_write",
    "load_pretrained",
    "load_state_dict_file",
    "resolve_weights_path",
    "save_safetensors",
]

logger = logging.getLogger(__name__)

#: keys of a checkpoint dict that may hold the model's state dict, tried in this order
STATE_DICT_KEYS = ("model", "state_dict", "network", "backbone", "network_def")
#: prefixes of monai_cover's own files, stripped automatically when the keys match without them:
#: ``models/cover_net.pt`` and COVER training checkpoints (``backbone.``, the CoverNet around the network),
#: checkpoints of the baseline methods (``network.backbone.``)
KNOWN_PREFIXES = {
    "backbone.": "a CoverNet state dict (models/cover_net.pt or a COVER training checkpoint)",
    "network.backbone.": "a baseline method's training checkpoint (network + loss heads)",
    "model.": "a wrapped model",
}


class RefusedPickleError(pickle.UnpicklingError, ValueError):
    """A weights file holding pickled Python objects besides tensors: never unpickled here."""


class WeightsMismatchError(ValueError):
    """No pretrained tensor fits the network: names that do not line up, or widths that differ (the message
    says which, with examples)."""


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
    stripped_prefix: str = ""
    source_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        stripped = f" (source prefix {self.stripped_prefix!r} stripped)" if self.stripped_prefix else ""
        return (
            f"loaded {len(self.loaded)} tensors from {self.source}{stripped}: {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched, {len(self.excluded)} excluded"
        )

    def diagnosis(self, network: torch.nn.Module | None = None, source_state: Mapping | None = None) -> str:
        """What went wrong, in words: names that do not line up and shapes that differ, told apart, with a few
        examples of each and what to change. ``source_state`` defaults to the shapes recorded while loading."""
        return _diagnose(self, network, source_state if source_state is not None else self.source_shapes)


def resolve_weights_path(source: str | os.PathLike, model_file: str = "model.pt") -> Path:
    """The weights file for ``source``: a file as is; a bundle folder's ``models/<model_file>``;
    a folder that directly holds ``<model_file>`` (e.g. a ``models`` folder); in either folder, the same name with
    ``.safetensors`` when only that one is there (a bundle shipped without its ``.pt``)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        safetensors_file = Path(model_file).with_suffix(".safetensors").name
        for candidate in (path / "models" / model_file, path / model_file, path / "models" / safetensors_file,
                          path / safetensors_file):
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
    take ``state_dict_key`` (or the first of :py:data:`STATE_DICT_KEYS` present).

    A ``.safetensors`` file is read with ``safetensors.torch.load_file`` (no pickle at all).

    Raises:
        RefusedPickleError: the file holds pickled Python objects besides tensors (they could run code when
            unpickled): the message names the first one and how to save plain weights.
    """
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e}).") from e
    if _is_torchscript(path):
        logger.info("load_pretrained: %s is a TorchScript archive: reading its state_dict through torch.jit.load.",
                    path)
        try:
            module = torch.jit.load(str(path), map_location=map_location)
        except Exception as e:
            raise ValueError(f"{path}: a TorchScript archive that torch.jit.load cannot read ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}).") from e
        return _pick_state_dict(dict(module.state_dict()), state_dict_key, str(path))
    try:
        obj = torch.load(str(path), map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise ValueError(
            f"{path}: not a complete weights file ({size} bytes; truncated, corrupt or not written by torch.save): "
            f"{type(e).__name__}: {str(e).splitlines()[0][:200]}. Use the run's other copy (models/model_best.pt, "
            "models/model.safetensors, a checkpoint) or save the weights again."
        ) from e
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (e.g. {found.group(1)})" if found else ""
        raise RefusedPickleError(
            f"{path}: refused. The file holds pickled Python objects{what} besides tensors; monai_cover only reads "
            "tensors from weights files, since unpickling objects can run arbitrary code. Save the weights alone where "
            "the model was trained, torch.save(model.state_dict(), 'weights.pt'), and load that file (or pass the "
            "state dict itself to load_pretrained)."
        ) from None
    return _pick_state_dict(obj, state_dict_key, str(path))


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Write ``path`` through ``write(temporary_path)`` and rename it into place, so a failed write (a full disk,
    a kill) leaves the previous file as it was and no temporary file behind. The parent folder is created.

    Returns:
        ``path``.
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's (or the writer's) 0600 would hide the file from the user's group
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_safetensors(source: str | os.PathLike | Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict, or the weights of a file :py:func:`load_state_dict_file` reads (e.g. ``models/model.pt``),
    as safetensors at ``path`` (atomically: a temporary file renamed). Tensors that share memory (a module used in two
    places) are written as separate copies, which safetensors requires.

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    if isinstance(source, Mapping):
        state = _pick_state_dict(source, None, "state dict")
    else:
        state = load_state_dict_file(source)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def _is_torchscript(path: str | os.PathLike) -> bool:
    """A TorchScript archive (``torch.jit.save``): a zip file holding ``<name>/constants.pkl`` or ``<name>/code/``."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 1)[-1].startswith(("constants.pkl", "code/")) for n in archive.namelist())


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
    partial: bool = False,
) -> LoadReport:
    r"""Copy pretrained weights into ``network`` by key, and say which keys were loaded.

    Source keys are rewritten in this order: a leading ``"module."`` (DistributedDataParallel) is
    dropped; keys not starting with ``source_prefix`` are ignored and the prefix is stripped (e.g.
    ``source_prefix="backbone."`` to take the backbone out of a full ``CoverNet`` state dict);
    ``prefix`` is prepended (e.g. ``"encoder."`` when the pretrained net sits inside a wrapper);
    ``mapping`` renames whole keys (``{source_key_after_prefixes: destination_key}``).

    Without ``source_prefix``, ``prefix`` and ``mapping``, monai_cover's own files load as they are: when fewer than
    half of the network's keys are found by name, the known prefixes (:py:data:`KNOWN_PREFIXES`: ``backbone.`` of
    ``models/cover_net.pt`` and COVER training checkpoints, ``network.backbone.`` of the baselines' checkpoints),
    else the most common prefix in front of the network's key names, are stripped, and the report says so
    (``report.stripped_prefix``, logged).
    Destination keys matching any ``exclude`` regex (``re.search``) are skipped, and a tensor whose
    shape differs is reported as mismatched, not loaded (e.g. a final conv with another number of classes).

    Args:
        network: the module to load into (modified in place).
        source: a bundle folder (``models/model.pt`` is read), a weights file (a state dict such as
            ``models/model.pt`` or ``models/cover_net.pt``, or a checkpoint dict holding one under
            ``state_dict_key``/``"model"``/``"state_dict"``..., such as ``checkpoints/checkpoint_epoch=<n>.pt``),
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
        partial: load what fits when some tensors have other shapes (they are skipped and reported as
            ``mismatched``). By default such a load is refused: a 2-D file into a 3-D network, or other widths, would
            load the norms and biases and leave every convolution random. Name the keys with ``exclude`` instead
            where you know them (e.g. ``exclude=r"^final_conv\."`` for another number of classes).

    Returns:
        a :py:class:`LoadReport`; it is also logged (INFO) by the ``monai_cover.weights`` logger.

    Raises:
        WeightsMismatchError: (a ``ValueError``) no source tensor fits any destination key, or a tensor outside
            ``exclude`` has another shape (another architecture, other ``features``, 2-D vs 3-D, another number of
            classes) unless ``partial=True``; nothing is loaded then. The message tells
            names that do not line up (a few keys of each side, so a ``prefix``/``source_prefix``/``mapping`` can be
            chosen) from shapes that differ (a few keys with both shapes, and for a ``BasicUNet`` the ``features``
            the file was trained with).
        RefusedPickleError: a file holding pickled objects besides tensors.

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
    dst = network.state_dict()
    stripped = ""
    if not (source_prefix or prefix or mapping):
        stripped = _auto_prefix(src, dst)
        if stripped:
            logger.info(
                "load_pretrained: %s looks like %s: stripped the key prefix %r.",
                where, KNOWN_PREFIXES.get(stripped, "a wrapped network"), stripped,
            )  # fmt: skip
    renamed = _rename(src, source_prefix or stripped, prefix, mapping)

    patterns = _as_patterns(exclude)
    report = LoadReport(source=where, stripped_prefix=stripped)
    report.source_shapes = {k: tuple(v.shape) for k, v in renamed.items()}
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

    if not to_load or len(report.mismatched) > len(report.loaded):  # nothing, or clearly another architecture
        what = "no weights" if not to_load else f"only {len(report.loaded)} of {len(dst)} tensors"
        raise WeightsMismatchError(
            f"load_pretrained: {what} from {where} match {type(network).__name__}. "
            + _diagnose(report, network, renamed)
        )
    if report.mismatched and not partial:
        raise WeightsMismatchError(
            f"load_pretrained: {len(report.mismatched)} of the {len(dst)} tensors of {type(network).__name__} have "
            f"another shape in {where}; nothing was loaded. " + _diagnose(report, network, renamed)
            + " To load the tensors that fit anyway, pass partial=True."
        )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise RuntimeError(
            f"load_pretrained(strict=True): {report}; missing {report.missing[:10]}, unexpected "
            f"{report.unexpected[:10]}, mismatched {dict(list(report.mismatched.items())[:10])}. "
            + _diagnose(report, network, renamed)
        )
    result = network.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen: every key came from network.state_dict()
        raise RuntimeError(f"load_pretrained: unexpected keys while loading {result.unexpected_keys[:10]}.")
    logger.info("%s", report)
    for name, keys in (("missing", report.missing), ("unexpected", report.unexpected), ("excluded", report.excluded)):
        if keys:
            logger.info("%s keys (%d): %s%s", name, len(keys), keys[:20], " ..." if len(keys) > 20 else "")
    if report.mismatched:
        shown = dict(list(report.mismatched.items())[:10])
        logger.info("shape-mismatched keys (source, network) (%d): %s", len(report.mismatched), shown)
    if len(report.missing) > len(report.loaded):
        why = _diagnose(report, network, renamed)
        logger.warning("load_pretrained: most of %s did not load. %s", type(network).__name__, why)
    return report


def _rename(
    src: Mapping[str, torch.Tensor], source_prefix: str, prefix: str, mapping: Mapping[str, str] | None
) -> dict[str, torch.Tensor]:
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
    return renamed


def _auto_prefix(src: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor]) -> str:
    """The key prefix to strip from ``src`` so that its names line up with ``dst``: ``""`` when they already do
    (half of the network's keys or more), else the best of :py:data:`KNOWN_PREFIXES` or, failing those, the most
    common prefix ``p`` of source keys ``p + <network key>``."""
    keys = [k[len("module.") :] if k.startswith("module.") else k for k in src]
    direct = sum(k in dst for k in keys)
    if direct * 2 >= len(dst) or not dst:
        return ""
    best, best_n = "", direct
    for p in KNOWN_PREFIXES:
        n = sum(k.startswith(p) and k[len(p) :] in dst for k in keys)
        if n > best_n:
            best, best_n = p, n
    if best:
        return best
    counts: Counter = Counter()
    for k in keys:
        for d in dst:
            if k.endswith("." + d):
                counts[k[: len(k) - len(d)]] += 1
    if counts:
        p, n = counts.most_common(1)[0]
        if n * 2 >= len(dst) and n > best_n:
            return p
    return ""


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _basicunet_features(state: Mapping) -> tuple[int, ...] | None:
    """The ``features`` of a MONAI ``BasicUNet`` state dict (or ``{key: shape}``): five encoder widths, then the
    decoder's last; ``None`` when the keys are not a BasicUNet's."""
    names = ["conv_0.conv_0.conv.weight"] + [f"down_{i}.convs.conv_0.conv.weight" for i in range(1, 5)]
    if not all(n in state for n in names) or "final_conv.weight" not in state:
        return None
    return tuple(int(_shape(state[n])[0]) for n in names) + (int(_shape(state["final_conv.weight"])[1]),)


def _diagnose(report: LoadReport, network: torch.nn.Module | None, source_state: Mapping | None) -> str:
    dst = network.state_dict() if network is not None else {}
    src = dict(source_state or {})
    lines = []
    common = [k for k in dst if k in src]
    if report.mismatched:
        examples = list(report.mismatched.items())[:3]
        shown = "; ".join(f"{k!r}: file {tuple(a)} vs network {tuple(b)}" for k, (a, b) in examples)
        lines.append(
            f"Shapes: {len(report.mismatched)} of the {len(common)} key(s) whose names line up have other shapes, "
            f"e.g. {shown}."
        )
        features = _basicunet_features(src)
        mine = _basicunet_features(dst)
        only_head = all(k.startswith("final_conv.") for k in report.mismatched)
        dims = {(len(a) - 2, len(b) - 2) for k, (a, b) in report.mismatched.items()
                if len(a) != len(b) and k.endswith("weight") and len(a) >= 4 and len(b) >= 4}
        if dims:
            file_dims, net_dims = sorted(dims)[0]
            lines.append(
                f"The file holds a {file_dims}-D network (its convolution kernels have {file_dims} spatial axes) and "
                f"the network is {net_dims}-D: load {file_dims}-D weights into a network built with "
                f"spatial_dims={file_dims}."
            )
        elif only_head:
            lines.append(
                "Only the final convolution differs (another number of output classes): pass "
                "exclude=r'^final_conv\\.' to leave it out."
            )
        elif features is not None and mine is not None and features != mine:
            lines.append(
                f"The network's widths differ from the pretrained ones: the file holds a BasicUNet with "
                f"features={features}, the network has features={mine}. Build the network with "
                f"features={features} (keep out_channels as you need, and exclude=r'^final_conv\\.')."
            )
        else:
            lines.append(
                "The layer widths differ: build the network with the same widths (e.g. `features`) and input "
                "channels as the pretraining run."
            )
    name_missing = [k for k in report.missing if k not in src]
    if name_missing and len(common) * 2 < len(dst):
        wrapped = Counter(d[: len(d) - len(k)] for d in dst for k in src if d.endswith("." + k))
        hint = ""
        if wrapped:
            p, n = wrapped.most_common(1)[0]
            if n * 2 >= len(src):
                hint = f" The network's keys are the file's with the prefix {p!r} in front: pass prefix={p!r}."
        lines.append(
            f"Names: {len(dst) - len(common)} of the network's {len(dst)} key(s) have no tensor of that name in the "
            f"file, e.g. network {name_missing[:3]} vs file {list(src)[:3]}.{hint} Set source_prefix= (to strip a "
            "prefix of the file's keys), prefix= (to add one) or mapping= so the names line up, or load into the "
            "network the file was saved from."
        )
    if not lines:
        lines.append(f"{report}.")
    return " ".join(lines)
