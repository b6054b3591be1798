# SPDX-License-Identifier: Apache-2.0
"""Batch preparation that lets MONAI's own ``SupervisedTrainer``/``SupervisedEvaluator`` run COVER and the
baselines unchanged: one keys-based ``PrepareBatch``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from monai.utils import convert_to_tensor

__all__ = ["KeysPrepareBatch", "CoverPrepareBatch"]


class KeysPrepareBatch(PrepareBatch):
    """MONAI's ``(inputs, targets, args, kwargs)`` from a batch dict, by key.

    ``inputs`` is ``batch[input_keys[0]]``, the other input keys become positional ``args`` of the network
    (MONAI's default iteration calls ``network(inputs, *args)``), and ``targets`` is a dict
    ``{name: batch[key]}`` for ``target_keys`` (what the loss reads). Every tensor is moved to ``device`` as
    a plain tensor: ``MetaTensor`` tracking through the network and losses costs time and nothing needs it.

    Args:
        input_keys: batch keys of the network inputs, in call order (at least one).
        target_keys: batch keys of the loss targets.
        target_names: the names of the targets in the target dict (default: the keys themselves).
        optional_keys: target keys that may be absent from a batch (left out of the target dict).
    """

    def __init__(
        self,
        input_keys: Sequence[str],
        target_keys: Sequence[str] = (),
        target_names: Sequence[str] | None = None,
        optional_keys: Sequence[str] = (),
    ) -> None:
        self.input_keys, self.target_keys = [str(k) for k in input_keys], [str(k) for k in target_keys]
        self.target_names = list(target_names) if target_names is not None else list(self.target_keys)
        self.optional_keys = {str(k) for k in optional_keys}
        name = type(self).__name__
        if not self.input_keys:
            raise ValueError(f"{name}: input_keys must name at least one batch key.")
        if len(self.target_names) != len(self.target_keys):
            raise ValueError(f"{name}: target_names {self.target_names} must match target_keys {self.target_keys}.")
        keys = self.input_keys + self.target_keys
        if len(set(keys)) != len(keys):
            raise ValueError(f"{name}: the input and target keys must be distinct, got {keys}.")

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, ...], dict]:
        name = type(self).__name__
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"{name}: expected a dict batch, got {type(batchdata).__name__}.")
        required = [k for k in self.input_keys + self.target_keys if k not in self.optional_keys]
        missing = [k for k in required if k not in batchdata]
        if missing:
            raise KeyError(f"{name}: the batch has no {missing}; its keys are {sorted(map(str, batchdata))}.")

        def move(x: Any) -> Any:
            if not isinstance(x, torch.Tensor):
                return x
            return convert_to_tensor(x, track_meta=False).to(device=device, non_blocking=non_blocking, **kwargs)

        inputs = [move(batchdata[k]) for k in self.input_keys]
        targets = {n: move(batchdata[k]) for k, n in zip(self.target_keys, self.target_names) if k in batchdata}
        return inputs[0], targets, tuple(inputs[1:]), {}


class CoverPrepareBatch(KeysPrepareBatch):
    """Turn a collated ``RandCoverPaird`` batch into ``(view_a, {"ddf": ddf, "overlap": overlap}, (view_b,), {})``.

    MONAI's default iteration then calls ``network(view_a, view_b)`` (a
    :py:class:`~monai_cover.networks.nets.CoverNet`) and ``loss_function(pred, {"ddf", "overlap"})``
    (a :py:class:`~monai_cover.losses.CoverLoss`); no custom ``iteration_update`` is needed.

    Args:
        view_a_key, view_b_key, ddf_key, overlap_key: keys of the batch dict (``RandCoverPaird``'s defaults).
            The target dict always uses the keys ``"ddf"`` and ``"overlap"``. A batch without ``overlap_key``
            gives a target without ``"overlap"`` (``CoverLoss`` then computes it from the displacement).
        network_ddf: also pass the true field to the network as ``network(view_a, view_b, ddf=ddf)``, for a head
            with teacher-forced levels (``CoverHead(teacher_forced_levels=1)``); default False (the network sees
            the two views only).

    Examples::

        trainer = SupervisedTrainer(
            device=device, max_epochs=10, train_data_loader=loader, network=CoverNet(backbone),
            optimizer=opt, loss_function=CoverLoss(), prepare_batch=CoverPrepareBatch(),
        )
    """

    def __init__(
        self,
        view_a_key: str = "view_a",
        view_b_key: str = "view_b",
        ddf_key: str = "ddf",
        overlap_key: str = "overlap",
        network_ddf: bool = False,
    ) -> None:
        super().__init__(
            [view_a_key, view_b_key],
            [ddf_key, overlap_key],
            target_names=["ddf", "overlap"],
            optional_keys=[overlap_key],
        )
        self.network_ddf = bool(network_ddf)

    def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
        inputs, targets, args, network_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        if self.network_ddf:
            network_kwargs = {**network_kwargs, "ddf": targets["ddf"]}
        return inputs, targets, args, network_kwargs
