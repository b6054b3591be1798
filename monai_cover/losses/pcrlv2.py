# SPDX-License-Identifier: Apache-2.0
"""PCRLv2-style baseline: multi-scale pixel restoration plus siamese (SimSiam) feature comparison.

Source: H.-Y. Zhou, C. Lu, C. Chen, S. Yang, Y. Yu, "A Unified Visual Information Preservation
Framework for Self-supervised Pre-training in Medical Image Analysis" (PCRLv2), IEEE TPAMI 2023;
the siamese term is SimSiam's (X. Chen & K. He, "Exploring Simple Siamese Representation
Learning", CVPR 2021). Written from the papers; crops and the backbone wrapper are in
:py:mod:`monai_cover.baselines.pcrlv2`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cover.losses.utils import reduce_per_sample
from monai_cover.networks.utils import global_pool

__all__ = ["PCRLv2Loss", "simsiam_similarity", "cosine_beta"]


def simsiam_similarity(p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetric SimSiam term ``−½[cos(p1, sg z2) + cos(p2, sg z1)]`` per row, shape ``(B,)``.

    ``p`` are predictor outputs, ``z`` projector outputs, ``sg`` stop-gradient. Range ``[−1, 1]``;
    the minimum ``−1`` is reached when each prediction is parallel to the other view's projection.
    """
    if not (p1.shape == z1.shape == p2.shape == z2.shape) or p1.ndim != 2:
        raise ValueError(
            f"simsiam_similarity: p1, z1, p2, z2 must all be (B, D), got {tuple(p1.shape)}, {tuple(z1.shape)}, "
            f"{tuple(p2.shape)}, {tuple(z2.shape)}."
        )
    return -0.5 * (F.cosine_similarity(p1, z2.detach(), dim=1) + F.cosine_similarity(p2, z1.detach(), dim=1))


def cosine_beta(epoch: int, total_epochs: int = 240) -> float:
    """PCRLv2's deep-supervision weight ``β = ½(1 + cos(π·epoch/total_epochs))``, from 1 down to 0."""
    import math

    return 0.5 * (1.0 + math.cos(math.pi * min(max(epoch, 0), total_epochs) / max(total_epochs, 1)))


class _ScaleHead(nn.Module):
    """Per-scale modules: projector ``BN1d(GAP)``, predictor ``C → 2C → C`` MLP, restoration 1×1 conv."""

    def __init__(self, spatial_dims: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.projector = nn.BatchNorm1d(channels)
        self.predictor = nn.Sequential(
            nn.Linear(channels, 2 * channels, bias=False),
            nn.BatchNorm1d(2 * channels),
            nn.ReLU(inplace=True),
            nn.Linear(2 * channels, channels),
        )
        self.restoration = Conv[Conv.CONV, spatial_dims](channels, out_channels, kernel_size=1)


class PCRLv2Loss(_Loss):
    """PCRLv2-style loss on backbone pyramids of two global crops and ``K`` local crops.

    Notation: ``f^s(x)`` is level ``s`` of the backbone pyramid of crop ``x`` (coarse to fine),
    ``z_s(x) = BN(GAP(f^s(x)))`` the projection, ``p_s(x) = MLP_s(z_s(x))`` the prediction,
    ``R_s(x) = up(conv1x1_s(f^s(x)))`` a restoration at scale ``s`` upsampled to the target size,
    ``σ`` the optional output activation, ``x_1, x_2`` the corrupted globals with clean targets
    ``g_1, g_2``, ``l_1..l_K`` the locals, ``sim_s(a, b) = −½[cos(p_s(a), sg z_s(b)) + cos(p_s(b), sg z_s(a))]``.
    With one scale ``k`` drawn per term (``scale_sampling="random"``, as PCRLv2) or every term averaged
    over all scales (``"all"``, deterministic)::

        L = ½ Σ_i [ MSE(σR_fine(x_i), g_i) + β·MSE(σR_k(x_i), g_i) ]        multi-scale pixel restoration
          + sim_k(x_1, x_2)                                               global siamese comparison
          + λ_loc · mean_{j, i} sim_k(l_j, x_i)                            local-to-global comparison

    ``R_fine`` is the restoration head of the finest level; ``β`` (``beta``, updatable between epochs,
    see :py:func:`cosine_beta`) weighs the deep-supervision head of the drawn scale. The projector
    and predictor BatchNorms see all views of a term together, so batch size 1 works.

    **Parameters.** The loss owns the per-scale projector, predictor and restoration heads: add
    ``loss.parameters()`` to the optimiser (``Adam([*net.parameters(), *loss.parameters()])``).

    Args:
        in_channels: channels of each pyramid level, coarse to fine.
        out_channels: image channels to restore.
        spatial_dims: 2 or 3.
        beta: deep-supervision weight ``β``.
        local_weight: ``λ_loc``.
        scale_sampling: ``"random"`` or ``"all"``.
        output_act: ``"sigmoid"`` (PCRLv2, targets in [0, 1]) or ``None`` (linear).
        generator: optional ``torch.Generator`` for the scale draws.
        reduction: ``"mean"``/``"sum"`` over the batch, or ``"none"`` for ``(B,)``.
        global_target_key: key of the target mapping (default matches ``PCRLv2Cropd``'s output).

    Inputs of ``forward(input, target)``:
        - ``input["global_pyramids"]``: two pyramids ``[f^0 .. f^{L−1}]``, ``f^s`` of shape ``(B, C_s, *S_s)``;
        - ``input["local_pyramids"]``: ``K ≥ 0`` pyramids of the local crops (may be empty or missing);
        - ``target[global_target_key]``: ``(B, 2, out_channels, *G)`` clean global crops.

    Example::

        crops = PCRLv2Cropd("image", global_size=(64, 64, 32), local_size=(16, 16, 16))
        net = PCRLv2Net(backbone)                       # backbone: image -> pyramid, coarse to fine
        loss = PCRLv2Loss(in_channels=(256, 128, 64, 32), out_channels=1)
        out = net(batch["pcrlv2_global_input"], batch["pcrlv2_local_input"])
        value = loss(out, batch)
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 1,
        spatial_dims: int = 3,
        beta: float = 1.0,
        local_weight: float = 1.0,
        scale_sampling: str = "random",
        output_act: str | None = None,
        generator: torch.Generator | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        global_target_key: str = "pcrlv2_global_target",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        channels = [int(c) for c in in_channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"PCRLv2Loss: in_channels must be a non-empty list of positive ints, got {in_channels}.")
        if int(spatial_dims) not in (2, 3):
            raise ValueError(f"PCRLv2Loss: spatial_dims must be 2 or 3, got {spatial_dims}.")
        if scale_sampling not in ("random", "all"):
            raise ValueError(f"PCRLv2Loss: scale_sampling must be 'random' or 'all', got {scale_sampling!r}.")
        if output_act not in (None, "sigmoid"):
            raise ValueError(f"PCRLv2Loss: output_act must be None or 'sigmoid', got {output_act!r}.")
        self.in_channels, self.spatial_dims, self.out_channels = channels, int(spatial_dims), int(out_channels)
        self.scales = nn.ModuleList([_ScaleHead(self.spatial_dims, c, self.out_channels) for c in channels])
        self.final_restoration = Conv[Conv.CONV, self.spatial_dims](channels[-1], self.out_channels, kernel_size=1)
        self.beta, self.local_weight = float(beta), float(local_weight)
        self.scale_sampling, self.output_act, self.generator = scale_sampling, output_act, generator
        self.global_target_key = global_target_key

    # -- pieces -------------------------------------------------------------------------------------------
    def _draw_scales(self) -> list[int]:
        if self.scale_sampling == "all":
            return list(range(len(self.scales)))
        device = self.generator.device if self.generator is not None else "cpu"
        return [int(torch.randint(len(self.scales), (1,), generator=self.generator, device=device))]

    def _restore(self, conv: nn.Module, feature: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        out = conv(feature)
        if tuple(out.shape[2:]) != tuple(size):
            mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
            out = F.interpolate(out, size=tuple(size), mode=mode, align_corners=False)
        return torch.sigmoid(out) if self.output_act == "sigmoid" else out

    def _siamese(self, scale: int, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """Mean over ``len(a)`` pairs ``(a_i, b_i)`` of ``sim_scale``, per batch element ``(B,)``."""
        head = self.scales[scale]
        bsz, n = a[0][scale].shape[0], len(a)
        pooled = torch.cat([global_pool(t[scale]) for t in a] + [global_pool(t[scale]) for t in b], dim=0)
        z = head.projector(pooled)
        p = head.predictor(z)
        za, zb = z[: n * bsz], z[n * bsz:]
        pa, pb = p[: n * bsz], p[n * bsz:]
        return simsiam_similarity(pa, za, pb, zb).reshape(n, bsz).mean(dim=0)

    @staticmethod
    def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)

    def _check(self, input: Mapping, target: Mapping) -> tuple[list, list, torch.Tensor]:
        if not isinstance(input, Mapping) or "global_pyramids" not in input:
            got = sorted(input) if isinstance(input, Mapping) else type(input).__name__
            raise ValueError(f"PCRLv2Loss: input must be a mapping with 'global_pyramids', got {got}.")
        if not isinstance(target, Mapping) or self.global_target_key not in target:
            got = sorted(target) if isinstance(target, Mapping) else type(target).__name__
            raise ValueError(f"PCRLv2Loss: target must be a mapping with {self.global_target_key!r}, got {got}.")
        globals_, locals_ = list(input["global_pyramids"]), list(input.get("local_pyramids") or [])
        gt = target[self.global_target_key]
        if len(globals_) != 2:
            raise ValueError(f"PCRLv2Loss: expected 2 global pyramids, got {len(globals_)}.")
        for name, pyr in [("global", p) for p in globals_] + [("local", p) for p in locals_]:
            shapes = [tuple(t.shape) for t in pyr]
            if len(pyr) != len(self.in_channels) or any(
                t.ndim != self.spatial_dims + 2 or t.shape[1] != c for t, c in zip(pyr, self.in_channels)
            ):
                raise ValueError(
                    f"PCRLv2Loss: a {name} pyramid must have {len(self.in_channels)} levels (B, C_s, *S) with "
                    f"C_s = {self.in_channels} and {self.spatial_dims} spatial dims, got {shapes}."
                )
        bsz = globals_[0][0].shape[0]
        if gt.ndim != self.spatial_dims + 3 or tuple(gt.shape[:3]) != (bsz, 2, self.out_channels):
            raise ValueError(
                f"PCRLv2Loss: {self.global_target_key} must be (B={bsz}, 2, {self.out_channels}, *G), "
                f"got {tuple(gt.shape)}."
            )
        return globals_, locals_, gt

    def components(self, input: Mapping, target: Mapping) -> dict[str, torch.Tensor]:
        """The terms of the loss, each ``(B,)``: ``restoration``, ``deep_supervision`` (unweighted by β),
        ``global_similarity``, ``local_similarity`` (zeros without locals) and ``total``."""
        globals_, locals_, gt = self._check(input, target)
        size = gt.shape[3:]
        rest, deep = [], []
        for i, pyr in enumerate(globals_):
            rest.append(self._mse(self._restore(self.final_restoration, pyr[-1], size), gt[:, i]))
            deep.append(torch.stack([self._mse(self._restore(self.scales[k].restoration, pyr[k], size), gt[:, i])
                                     for k in self._draw_scales()]).mean(dim=0))
        restoration, deep_supervision = torch.stack(rest).mean(0), torch.stack(deep).mean(0)
        global_sim = torch.stack([self._siamese(k, [globals_[0]], [globals_[1]]) for k in self._draw_scales()]).mean(0)
        if locals_:
            terms = []
            for gpyr in globals_:
                for lpyr in locals_:
                    terms.append(torch.stack([self._siamese(k, [lpyr], [gpyr]) for k in self._draw_scales()]).mean(0))
            local_sim = torch.stack(terms).mean(0)
        else:
            local_sim = torch.zeros_like(global_sim)
        total = restoration + self.beta * deep_supervision + global_sim + self.local_weight * local_sim
        return {
            "restoration": restoration,
            "deep_supervision": deep_supervision,
            "global_similarity": global_sim,
            "local_similarity": local_sim,
            "total": total,
        }

    def forward(self, input: Mapping, target: Mapping) -> torch.Tensor:  # type: ignore[override]
        total = self.components(input, target)["total"]
        return reduce_per_sample(total, self.reduction)
