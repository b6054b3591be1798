# SPDX-License-Identifier: Apache-2.0
"""The COVER pretraining network: one backbone for both views, and the VPA head."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.utils import convert_to_tensor

from monai_cover.networks.nets.cover_head import CoverHead, min_level_size

__all__ = ["CoverNet", "Covernet", "covernet", "TwoViewFeatures"]


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A MetaTensor as a plain tensor (same autograd graph)."""
    return convert_to_tensor(x, track_meta=False)


class TwoViewFeatures(nn.Module):
    """``backbone`` on both views of a COVER pair in one batched pass: ``forward(view_a, view_b)`` ->
    ``{"features_a", "features_b"}``, the finest backbone features ``(B, C_finest, *S)`` of each view.

    What an objective that reads features only needs (e.g. :py:class:`monai_cover.losses.VoxelInfoNCELoss`),
    without the cost of COVER's head; :py:class:`CoverNet` adds the head on top of the same pass.

    Args:
        backbone: a module mapping ``(B, C, *S)`` to a list of feature maps coarse to fine (or one tensor) whose
            finest level has the input's spatial size.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def backbone_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """The backbone's weights alone (for a ``FeaturePyramid``: the stock network's keys, no prefix)."""
        return self.backbone.state_dict()

    def pyramids(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The backbone pyramids (coarse to fine) of ``view_a`` and ``view_b`` ``(B, C, *S)``, from one batched pass."""
        name = type(self).__name__
        if view_a.shape != view_b.shape:
            raise ValueError(
                f"{name}: view_a {tuple(view_a.shape)} and view_b {tuple(view_b.shape)} must have the same shape."
            )
        if view_a.ndim < 3:
            raise ValueError(f"{name}: views must be (B, C, *spatial), got {tuple(view_a.shape)}.")
        view_a, view_b = _plain(view_a), _plain(view_b)
        batch = view_a.shape[0]
        pyramid = self.backbone(torch.cat([view_a, view_b], dim=0))
        if isinstance(pyramid, torch.Tensor):
            pyramid = [pyramid]
        # split, not two slices: the backward of a slice zero-fills a tensor of the whole level and the two are
        # then added, a split's backward writes each half once
        halves = [f.split(batch) for f in pyramid]
        features_a = [a for a, _ in halves]
        features_b = [b for _, b in halves]
        if tuple(features_b[-1].shape[2:]) != tuple(view_a.shape[2:]):
            raise ValueError(
                f"{name}: the finest backbone level {tuple(features_b[-1].shape)} must have the views' spatial "
                f"size {tuple(view_a.shape[2:])}."
            )
        return features_a, features_b

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> dict[str, torch.Tensor]:
        features_a, features_b = self.pyramids(view_a, view_b)
        return {"features_a": features_a[-1], "features_b": features_b[-1]}


class CoverNet(TwoViewFeatures):
    """``backbone`` + :py:class:`CoverHead`: ``forward(view_a, view_b)`` -> ``{"ddf", "features_a", "features_b"}``.

    Both views go through the backbone in one batched pass (concatenated along the batch axis), the pyramid is
    split back into the two views, and the head reads the displacement off it. The output dict is what
    :py:class:`monai_cover.losses.CoverLoss` takes as ``input``.

    Args:
        backbone: a module mapping ``(B, C, *S)`` to a list of feature maps coarse to fine whose finest level has
            the input's spatial size, with attributes ``out_channels`` (tuple, coarse to fine) and
            ``spatial_dims`` when ``head`` is not given: :py:class:`~monai_cover.networks.nets.PyramidUNet` or
            :py:class:`~monai_cover.networks.FeaturePyramid` around a stock MONAI network.
        head: a :py:class:`CoverHead`; ``None`` builds one from ``backbone.out_channels`` and
            ``backbone.spatial_dims`` with ``head_kwargs`` (``head_dim``, ``num_heads``, ``radius``, ...).
        levels: the head reads the ``levels`` finest levels of the backbone's pyramid (``None``: all of them, as
            the reference does with its five). Match it to the crop with
            :py:func:`~monai_cover.networks.nets.levels_for_size`: on levels smaller than
            :py:func:`~monai_cover.networks.nets.min_level_size` voxels the head starts worse than predicting
            zero, and a warning says so at the first forward pass.
        return_projections: also return ``"projections_a"``/``"projections_b"``: the finest features of each view
            through the head's finest projection (``(B, head_dim * heads, *S)``), e.g. to put ``L_con`` on them
            with ``CoverLoss(features_a_key="projections_a", features_b_key="projections_b")``.
        return_fields: also return ``"fields"``: the head's cumulative displacement after each level, coarse to
            fine (``fields[l]`` ``(B, spatial_dims, *S_l)`` in level ``l``'s voxels, ``fields[-1] == ddf``; see
            :py:meth:`CoverHead.forward`), what per-level deep supervision
            (``CoverLoss(level_weights=...)``) and :py:class:`~monai_cover.metrics.LevelEPEMetric` read.

    With a head built with ``feature_projector`` (a small 1x1-convolution projector, see :py:class:`CoverHead`),
    the output also holds ``"projected_a"``/``"projected_b"``: the finest backbone features of each view through
    it, ``(B, feature_projector[-1], *S)``; put ``L_con`` and the spread term on them with
    ``CoverLoss(features_a_key="projected_a", features_b_key="projected_b")``.

    Pretrained weights: ``net.backbone_state_dict()`` (same as ``net.backbone.state_dict()``) holds only the
    backbone; for a ``FeaturePyramid`` the keys are the wrapped network's own keys, ready for
    ``BasicUNet(...).load_state_dict(...)``.

    Examples::

        net = CoverNet(PyramidUNet(spatial_dims=3), radius=2)
        out = net(view_a, view_b)  # view_*: (B, 1, 64, 64, 64)
        out["ddf"].shape           # (B, 3, 64, 64, 64): view_b ~ warp(view_a, ddf), voxels
        out["features_b"].shape    # (B, 32, 64, 64, 64)
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: CoverHead | nn.Module | None = None,
        levels: int | None = None,
        return_projections: bool = False,
        return_fields: bool = False,
        **head_kwargs: Any,
    ) -> None:
        super().__init__(backbone)
        self.return_projections = bool(return_projections)
        self.return_fields = bool(return_fields)
        if levels is not None and (int(levels) != levels or int(levels) < 1):
            raise ValueError(f"CoverNet: levels must be a positive integer or None, got {levels!r}.")
        self.levels = None if levels is None else int(levels)
        if head is None:
            out_channels = getattr(backbone, "out_channels", None)
            spatial_dims = getattr(backbone, "spatial_dims", None)
            if not isinstance(out_channels, (tuple, list)) or spatial_dims is None:
                raise ValueError(
                    "CoverNet: to build the head, backbone must expose out_channels (a tuple, coarse to fine) and "
                    f"spatial_dims; got out_channels={out_channels!r}, spatial_dims={spatial_dims!r}. Pass head=."
                )
            if self.levels is not None and self.levels > len(out_channels):
                raise ValueError(
                    f"CoverNet: levels={self.levels} but the backbone has {len(out_channels)} pyramid levels "
                    f"(out_channels {tuple(out_channels)})."
                )
            channels = tuple(out_channels)[-self.levels:] if self.levels is not None else tuple(out_channels)
            head = CoverHead(int(spatial_dims), channels, **head_kwargs)
        elif head_kwargs:
            raise ValueError(f"CoverNet: head_kwargs {sorted(head_kwargs)} are only used when head is None.")
        self.head = head
        self._size_checked = False

    @property
    def capture_range(self) -> int:
        """The head's reach in full-resolution voxels per axis (see :py:func:`monai_cover.ddf.capture_range`)."""
        return int(self.head.capture_range)

    def _check_level_size(self, coarsest: Sequence[int]) -> None:
        radius = getattr(self.head, "radius", None)
        if self._size_checked or radius is None:
            return
        self._size_checked = True
        if min(int(s) for s in coarsest) < min_level_size(radius):
            warnings.warn(
                f"CoverNet: the head's coarsest level is {tuple(coarsest)} voxels, below {min_level_size(radius)} "
                f"(4 x radius): its displacements start worse than predicting zero. For crops of this size use "
                f"levels=monai_cover.networks.nets.levels_for_size(crop_size, radius={radius}).",
                stacklevel=3,
            )

    def forward(  # type: ignore[override]
        self, view_a: torch.Tensor, view_b: torch.Tensor, ddf: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            view_a: ``(B, C, *S)`` the appearance-augmented view (the key).
            view_b: ``(B, C, *S)`` the spatially augmented view (the query), same shape.
            ddf: the true field ``(B, spatial_dims, *S)``, only read when the head has ``teacher_forced_levels > 0``
                (``CoverPrepareBatch(network_ddf=True)`` passes it): the output then also holds ``"residuals"``,
                ``"residual_targets"`` and ``"residual_masks"`` (lists, one per teacher-forced level, see
                :py:meth:`CoverHead.teacher_forced`) for ``CoverLoss(residual_weight=...)``.

        Returns:
            dict with ``"ddf"`` ``(B, spatial_dims, *S)`` float32 predicted displacement (voxels, ``view_b(p) ~
            view_a(p + ddf(p))``, the ground truth's convention), ``"features_a"`` and ``"features_b"``: the finest
            backbone features ``(B, C_finest, *S)`` of each view; ``"fields"`` (a list, coarse to fine) with
            ``return_fields``, ``"projected_a"``/``"projected_b"`` with a head ``feature_projector``,
            ``"projections_a"``/``"projections_b"`` with ``return_projections``.
        """
        features_a, features_b = self.pyramids(view_a, view_b)
        if self.levels is not None:
            features_a, features_b = features_a[-self.levels:], features_b[-self.levels:]
        self._check_level_size(features_b[0].shape[2:])
        if self.return_fields:
            predicted, fields = self.head(features_a, features_b, return_fields=True)
        else:
            predicted, fields = self.head(features_a, features_b), None
        out = {"ddf": predicted, "features_a": features_a[-1], "features_b": features_b[-1]}
        if fields is not None:
            out["fields"] = fields
        if ddf is not None and getattr(self.head, "teacher_forced_levels", 0) > 0:
            out["residuals"], out["residual_targets"], out["residual_masks"] = self.head.teacher_forced(
                features_a, features_b, ddf
            )
        projector = getattr(self.head, "feature_projector", None)
        if projector is not None:
            batch = view_a.shape[0]
            out["projected_a"], out["projected_b"] = projector(torch.cat([features_a[-1], features_b[-1]])).split(batch)
        if self.return_projections:
            batch = view_a.shape[0]
            projected = self.head.projections[-1](torch.cat([features_a[-1], features_b[-1]], dim=0))
            out["projections_a"], out["projections_b"] = projected.split(batch)
        return out


Covernet = covernet = CoverNet
