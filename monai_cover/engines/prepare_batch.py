# SPDX-License-Identifier: Apache-2.0
"""Batch preparation that lets MONAI's own ``SupervisedTrainer``/``SupervisedEvaluator`` run COVER unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

__all__ = ["CoverPrepareBatch"]


class CoverPrepareBatch(PrepareBatch):
    """Turn a collated ``RandCoverPaird`` batch into MONAI's ``(inputs, targets, args, kwargs)``:
    ``(view_a, {"ddf": ddf, "overlap": overlap}, (view_b,), {})``, all moved to ``device`` as plain tensors
    (``MetaTensor`` metadata is dropped).

    MONAI's default iteration then calls ``network(view_a, view_b)`` (a
    :py:class:`~monai_cover.networks.nets.CoverNet`) and ``loss_function(pred, {"ddf", "overlap"})``
    (a :py:class:`~monai_cover.losses.CoverLoss`); no custom ``iteration_update`` is needed.

    Args:
        view_a_key, view_b_key, ddf_key, overlap_key: keys of the batch dict (``RandCoverPaird``'s defaults).
            The target dict always uses the keys ``"ddf"`` and ``"overlap"``. A batch without ``overlap_key``
            gives a target without ``"overlap"`` (``CoverLoss`` then computes it from the displacement).

    Examples::

        trainer = SupervisedTrainer(
            device=device, max_epochs=10, train_data_loader=loader, network=CoverNet(backbone),
            optimizer=opt, loss_function=CoverLoss(), prepare_batch=CoverPrepareBatch(),
        )
    """

    def __init__(
        self, view_a_key: str = "view_a", view_b_key: str = "view_b", ddf_key: str = "ddf", overlap_key: str = "overlap"
    ) -> None:
        keys = [view_a_key, view_b_key, ddf_key, overlap_key]
        if len(set(keys)) != 4:
            raise ValueError(
                f"CoverPrepareBatch: view_a_key, view_b_key, ddf_key and overlap_key must be distinct, got {keys}."
            )
        self.view_a_key, self.view_b_key, self.ddf_key, self.overlap_key = keys

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor], dict]:
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"CoverPrepareBatch: expected a dict batch, got {type(batchdata).__name__}.")
        missing = [k for k in (self.view_a_key, self.view_b_key, self.ddf_key) if k not in batchdata]
        if missing:
            raise KeyError(
                f"CoverPrepareBatch: the batch has no {missing}; its keys are {sorted(map(str, batchdata))}."
            )

        def move(x: torch.Tensor) -> torch.Tensor:
            # plain tensors: meta tracking through the network and losses costs time and nothing here needs it
            x = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
            return x.to(device=device, non_blocking=non_blocking, **kwargs)

        target = {"ddf": move(batchdata[self.ddf_key])}
        if self.overlap_key in batchdata:
            target["overlap"] = move(batchdata[self.overlap_key])
        return move(batchdata[self.view_a_key]), target, (move(batchdata[self.view_b_key]),), {}
