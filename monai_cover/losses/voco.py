# SPDX-License-Identifier: Apache-2.0
"""VoCo-style baseline: predict a random crop's position from its similarity to base crops.

Source: L. Wu, J. Zhuang, H. Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis", CVPR 2024. Written from the paper (the released code's
split into positive/negative terms is followed; its EMA teacher, absent from the paper, is not
included). Crops, position targets and the backbone wrapper are in :py:mod:`monai_cover.baselines.voco`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cover.losses.utils import reduce_per_sample

__all__ = ["VoCoLoss", "VoCoProjection"]


class VoCoProjection(nn.Module):
    """MLP ``F → h_1 → … → h_n``: ``Linear → BatchNorm1d(affine=False, no running stats) → ReLU`` between
    layers (VoCo: 1152 → 2048 → 2048 → 2048)."""

    def __init__(self, in_channels: int, channels: Sequence[int] = (2048, 2048, 2048)) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if int(in_channels) < 1 or not channels or min(channels) < 1:
            raise ValueError(
                f"VoCoProjection: in_channels and channels must be positive, got {in_channels}, {channels}."
            )
        layers: list[nn.Module] = []
        width = int(in_channels)
        for i, c in enumerate(channels):
            layers.append(nn.Linear(width, c))
            if i < len(channels) - 1:
                layers += [nn.BatchNorm1d(c, affine=False, track_running_stats=False), nn.ReLU(inplace=True)]
            width = c
        self.mlp = nn.Sequential(*layers)
        self.in_channels = int(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class VoCoLoss(_Loss):
    """VoCo-style position-prediction loss on pooled crop features.

    With ``q_i`` the (projected) feature of base crop ``i``, ``p_k`` that of random crop ``k``, the
    predicted position logits ``l_{k,i} = ReLU(cos(p_k, q_i))`` and the targets ``y_{k,i}`` (overlap
    fractions, :py:func:`~monai_cover.baselines.voco.voco_position_labels`), per volume::

        L_pos = mean_k [ −Σ_i y_{k,i} log(1 − |y_{k,i} − l_{k,i}|) / Σ_i y_{k,i} ]
        L_neg = mean over (k, i) with y_{k,i} = 0 of l_{k,i}²            (0 when there is none)
        L_reg = mean over pairs i < j of ReLU(cos(q_i, sg q_j))²          (base crops kept apart)
        L     = L_pos + L_neg + λ_reg·L_reg

    ``sg`` is stop-gradient; ``log`` is clamped at ``log(eps)``. The minimum 0 is reached when
    ``l = y`` and the base features are mutually orthogonal (e.g. a random crop equal to base ``j``
    has ``y = l = e_j``).

    **Parameters.** With ``in_channels`` set, the loss owns a :py:class:`VoCoProjection`: add
    ``loss.parameters()`` to the optimiser. Without it, pooled features are compared directly.

    Args:
        in_channels: width ``F`` of the pooled features; ``None`` means no projection.
        projection_channels: widths of the projection MLP (VoCo: 2048, 2048, 2048).
        reg_weight: ``λ_reg``.
        eps: clamp of the log argument.
        reduction: ``"mean"``/``"sum"`` over the batch, or ``"none"`` for ``(B,)``.
        labels_key: key of the target mapping (default matches ``VoCoCropd``'s output).

    Inputs of ``forward(input, target)``:
        - ``input["base_features"]``: ``(B, n_base, F)``; ``input["random_features"]``: ``(B, K, F)``
          (``VoCoNet`` output);
        - ``target[labels_key]``: ``(B, K, n_base)`` position targets.

    Example::

        crops = VoCoCropd("image", grid=(4, 4), num_random=2, roi_size=(64, 64, 64))
        net = VoCoNet(backbone)
        loss = VoCoLoss(in_channels=sum(pyramid_channels), projection_channels=(512, 512))
        value = loss(net(batch["voco_base"], batch["voco_random"]), batch)
    """

    def __init__(
        self,
        in_channels: int | None = None,
        projection_channels: Sequence[int] = (2048, 2048, 2048),
        reg_weight: float = 1.0,
        eps: float = 1e-6,
        reduction: LossReduction | str = LossReduction.MEAN,
        labels_key: str = "voco_labels",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if not 0 < float(eps) < 1:
            raise ValueError(f"VoCoLoss: eps must be in (0, 1), got {eps}.")
        self.projection = VoCoProjection(in_channels, projection_channels) if in_channels is not None else None
        self.in_channels = in_channels
        self.reg_weight, self.eps, self.labels_key = float(reg_weight), float(eps), labels_key

    def components(self, input: Mapping, target: Mapping) -> dict[str, torch.Tensor]:
        """The terms ``pos``, ``neg``, ``reg`` and ``total``, each ``(B,)``, and ``logits`` ``(B, K, n_base)``."""
        if not isinstance(input, Mapping) or any(k not in input for k in ("base_features", "random_features")):
            got = sorted(input) if isinstance(input, Mapping) else type(input).__name__
            raise ValueError(
                f"VoCoLoss: input must be a mapping with 'base_features' and 'random_features', got {got}."
            )
        if not isinstance(target, Mapping) or self.labels_key not in target:
            got = sorted(target) if isinstance(target, Mapping) else type(target).__name__
            raise ValueError(f"VoCoLoss: target must be a mapping with {self.labels_key!r}, got {got}.")
        base, rand, y = input["base_features"], input["random_features"], target[self.labels_key]
        if base.ndim != 3 or rand.ndim != 3 or base.shape[0] != rand.shape[0] or base.shape[2] != rand.shape[2]:
            raise ValueError(f"VoCoLoss: base_features and random_features must be (B, n_base, F) and (B, K, F), got "
                             f"{tuple(base.shape)} and {tuple(rand.shape)}.")
        bsz, n_base, k = base.shape[0], base.shape[1], rand.shape[1]
        if tuple(y.shape) != (bsz, k, n_base):
            raise ValueError(f"VoCoLoss: {self.labels_key} must be (B, K, n_base) = {(bsz, k, n_base)}, got "
                             f"{tuple(y.shape)}.")
        if self.in_channels is not None and base.shape[2] != self.in_channels:
            raise ValueError(f"VoCoLoss: expected features of width {self.in_channels}, got {tuple(base.shape)}.")
        if self.projection is not None:
            flat = self.projection(torch.cat([base, rand], dim=1).reshape(bsz * (n_base + k), -1))
            flat = flat.reshape(bsz, n_base + k, -1)
            base, rand = flat[:, :n_base], flat[:, n_base:]
        q = F.normalize(base.float(), dim=2)
        p = F.normalize(rand.float(), dim=2)
        y = y.to(q)
        logits = torch.relu(p @ q.transpose(1, 2))  # (B, K, n_base)
        log_term = torch.log((1.0 - (y - logits).abs()).clamp(min=self.eps))
        pos = (-(y * log_term).sum(dim=2) / y.sum(dim=2).clamp(min=self.eps)).mean(dim=1)
        zero = (y == 0).to(q)
        neg = (zero * logits.pow(2)).flatten(1).sum(1) / zero.flatten(1).sum(1).clamp(min=1.0)
        if n_base > 1:
            sim = torch.relu(q @ q.detach().transpose(1, 2)).pow(2)  # cos(q_i, sg q_j)
            upper = torch.triu(torch.ones(n_base, n_base, dtype=torch.bool, device=q.device), diagonal=1)
            reg = sim[:, upper].mean(dim=1)
        else:
            reg = torch.zeros_like(pos)
        total = pos + neg + self.reg_weight * reg
        return {"pos": pos, "neg": neg, "reg": reg, "total": total, "logits": logits}

    def forward(self, input: Mapping, target: Mapping) -> torch.Tensor:  # type: ignore[override]
        total = self.components(input, target)["total"]
        return reduce_per_sample(total, self.reduction)
