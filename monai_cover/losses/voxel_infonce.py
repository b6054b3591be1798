# SPDX-License-Identifier: Apache-2.0
"""Binary dense contrast on COVER's own view pairs: the vox2vec-style voxel InfoNCE baseline.

Only the objective differs from :py:class:`monai_cover.losses.CoverLoss`: the same
``RandCoverPaird`` views, the same backbone, the same ``CoverNet`` output dict and the same
``{"ddf", "overlap"}`` target, so the loss drops into the same trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cover.ddf import identity_grid, overlap_mask, warp
from monai_cover.losses.utils import reduce_per_sample

__all__ = ["VoxelInfoNCELoss", "VoxelProjectionHead", "sample_overlap_voxels", "voxel_nt_xent"]


class VoxelProjectionHead(nn.Module):
    """Per-voxel MLP projection head applied to sampled feature vectors ``(N, C) -> (N, D)``.

    ``Linear -> BatchNorm1d -> ReLU`` for every hidden width, then a final ``Linear`` (vox2vec's
    head is ``C -> C -> C -> 128`` with BatchNorm and ReLU). The output is *not* normalised; the
    loss L2-normalises it.

    Args:
        in_channels: feature channels ``C`` of the backbone's finest map.
        channels: widths of the hidden layers followed by the output width ``D``.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if int(in_channels) < 1 or not channels or min(channels) < 1:
            raise ValueError(
                f"VoxelProjectionHead: in_channels and channels must be positive, got in_channels={in_channels}, "
                f"channels={channels}."
            )
        layers: list[nn.Module] = []
        width = int(in_channels)
        for hidden in channels[:-1]:
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, channels[-1]))
        self.mlp = nn.Sequential(*layers)
        self.in_channels = int(in_channels)
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"VoxelProjectionHead: expected (N, {self.in_channels}) vectors, got {tuple(x.shape)}.")
        return self.mlp(x)


def sample_overlap_voxels(
    overlap: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw up to ``num_samples`` distinct voxels with ``overlap > 0`` per batch element, uniformly.

    Args:
        overlap: ``(B, 1, *S)`` mask on view B's grid.
        num_samples: voxels per batch element (all overlap voxels where there are fewer).
        generator: a ``torch.Generator`` for reproducible draws (its device is used for the random
            numbers); ``None`` uses torch's global RNG (seeded by ``monai.utils.set_determinism``).

    Returns:
        ``(batch_index, flat_index)``, two ``(N,)`` long tensors on ``overlap``'s device: the batch
        element and the flattened spatial index of every sampled voxel, grouped by batch element.
    """
    if overlap.ndim < 3 or overlap.shape[1] != 1:
        raise ValueError(f"sample_overlap_voxels: overlap must be (B, 1, *S), got {tuple(overlap.shape)}.")
    mask = overlap.detach().reshape(overlap.shape[0], -1) > 0
    rand_device = generator.device if generator is not None else mask.device
    scores = torch.rand(mask.shape, generator=generator, device=rand_device).to(mask.device)
    scores = torch.where(mask, scores, torch.full_like(scores, -1.0))
    counts = mask.sum(dim=1).clamp(max=int(num_samples)).tolist()
    batch_idx, flat_idx = [], []
    for b, k in enumerate(counts):
        if k == 0:
            continue
        idx = torch.topk(scores[b], k=int(k)).indices
        flat_idx.append(idx)
        batch_idx.append(torch.full_like(idx, b))
    if not flat_idx:
        empty = torch.zeros(0, dtype=torch.long, device=mask.device)
        return empty, empty.clone()
    return torch.cat(batch_idx), torch.cat(flat_idx)


def voxel_nt_xent(
    u: torch.Tensor, v: torch.Tensor, temperature: float = 0.1, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric NT-Xent over ``N`` positive pairs ``(u_n, v_n)``, per anchor.

    With ``s`` the cosine similarity and ``τ`` the temperature::

        ℓ_u(n) = −s(u_n, v_n)/τ + log( Σ_m e^{s(u_n, v_m)/τ} + Σ_{m≠n} e^{s(u_n, u_m)/τ} )
        ℓ_v(n) = the same with u and v swapped
        returns ½ (ℓ_u(n) + ℓ_v(n)),  shape (N,)

    Every other sampled voxel, in either view, is a negative. ``exclude`` (``(N, N)`` bool) removes
    the pairs ``(n, m)`` it marks from both negative sums (the positive ``(n, n)`` is always kept).
    With ``N = 1`` the loss is 0 (no negatives).

    Args:
        u, v: ``(N, D)`` embeddings (normalised here).
        temperature: ``τ > 0``.
        exclude: optional ``(N, N)`` bool mask of negatives to drop.
    """
    if u.ndim != 2 or u.shape != v.shape:
        raise ValueError(f"voxel_nt_xent: u and v must both be (N, D), got {tuple(u.shape)} and {tuple(v.shape)}.")
    with torch.autocast(device_type=u.device.type, enabled=False):
        return _nt_xent_fp32(u.float(), v.float(), float(temperature), exclude)


#: below this temperature the fixed shift of :py:class:`_SharedShiftNTXent` could underflow (logits span 2/tau)
_MIN_SHIFTED_TEMPERATURE = 0.025


def _nt_xent_fp32(u: torch.Tensor, v: torch.Tensor, temperature: float, exclude: torch.Tensor | None) -> torch.Tensor:
    u = F.normalize(u, dim=1)
    v = F.normalize(v, dim=1)
    positive = (u * v).sum(dim=1) / temperature
    if exclude is None and temperature >= _MIN_SHIFTED_TEMPERATURE:
        lse_u, lse_v = _SharedShiftNTXent.apply(u, v, temperature)
    else:
        lse_u, lse_v = _plain_log_partitions(u, v, temperature, exclude)
    return 0.5 * (lse_u + lse_v) - positive


def _plain_log_partitions(
    u: torch.Tensor, v: torch.Tensor, temperature: float, exclude: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log(Σ_m e^{s(u_n, v_m)/τ} + Σ_{m≠n} e^{s(u_n, u_m)/τ})`` and v's, by autograd (any mask, any τ)."""
    n = u.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=u.device)
    drop_cross = exclude & ~eye if exclude is not None else torch.zeros_like(eye)
    drop_self = eye | drop_cross
    neg_inf = torch.finfo(u.dtype).min

    def one_side(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        cross = (a @ b.t() / temperature).masked_fill(drop_cross, neg_inf)
        self_ = (a @ a.t() / temperature).masked_fill(drop_self, neg_inf)
        return torch.logsumexp(torch.cat([cross, self_], dim=1), dim=1)

    return one_side(u, v), one_side(v, u)


class _SharedShiftNTXent(torch.autograd.Function):
    """The two log-partitions of :py:func:`voxel_nt_xent` for unit vectors, with a hand-written backward.

    Every logit is ``s/τ ≤ 1/τ``, so ``exp(s/τ − 1/τ)`` needs no per-row maximum and one exponentiated
    cross matrix serves u's rows and v's rows (its columns). The backward is matrix products with the
    stored exponentials only: ``∂/∂u = a⊙(C v) + C(b⊙v) + a⊙(A u) + A(a⊙u)`` over τ, with
    ``a = g_u/Z_u``, ``b = g_v/Z_v`` (and the mirror for v), where autograd's log-sum-exp would spend
    a dozen elementwise passes over each ``N × N`` matrix. Needs ``τ ≥ 0.025``: the smallest term is
    then at least ``e^{−80}``, still a normal fp32 number.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, v: torch.Tensor, temperature: float):  # type: ignore[override]
        shift = torch.full((1, 1), -1.0 / temperature, dtype=u.dtype, device=u.device)
        cross = torch.addmm(shift, u, v.t(), alpha=1.0 / temperature).exp_()  # e^{(s(u_n, v_m) - 1)/τ}
        self_u = torch.addmm(shift, u, u.t(), alpha=1.0 / temperature).exp_().fill_diagonal_(0.0)
        self_v = torch.addmm(shift, v, v.t(), alpha=1.0 / temperature).exp_().fill_diagonal_(0.0)
        z_u = cross.sum(dim=1) + self_u.sum(dim=1)
        z_v = cross.sum(dim=0) + self_v.sum(dim=1)
        ctx.save_for_backward(u, v, cross, self_u, self_v, z_u, z_v)
        ctx.temperature = temperature
        return z_u.log() + 1.0 / temperature, z_v.log() + 1.0 / temperature

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor, grad_v: torch.Tensor):  # type: ignore[override]
        u, v, cross, self_u, self_v, z_u, z_v = ctx.saved_tensors
        a = (grad_u / z_u)[:, None] / ctx.temperature
        b = (grad_v / z_v)[:, None] / ctx.temperature
        d = u.shape[1]
        cv = cross @ torch.cat([v, b * v], dim=1)
        ctu = cross.t() @ torch.cat([u, a * u], dim=1)
        su = self_u @ torch.cat([u, a * u], dim=1)
        sv = self_v @ torch.cat([v, b * v], dim=1)
        du = a * cv[:, :d] + cv[:, d:] + a * su[:, :d] + su[:, d:]
        dv = b * ctu[:, :d] + ctu[:, d:] + b * sv[:, :d] + sv[:, d:]
        return du, dv, None


class VoxelInfoNCELoss(_Loss):
    """Binary voxel contrast (vox2vec-style InfoNCE) on COVER's paired views.

    Source: M. Goncharov et al., "vox2vec: A Framework for Self-supervised Contrastive Learning of
    Voxel-level Representations in Medical Images", MICCAI 2023 (NT-Xent of T. Chen et al., SimCLR,
    ICML 2020). This is the "binary dense contrastive learning" that COVER (He & Li, ICCV 2025)
    argues over-disperses features.

    **Pairs.** ``N`` voxels ``p_n`` are drawn uniformly (without replacement) from the overlap of each
    batch element, on view B's grid, at most ``num_samples`` per element. With the ground-truth field
    ``ψ`` (``view_b(p) = view_a(p + ψ(p))``, see :py:mod:`monai_cover.ddf`):

    - ``u_n = g(f_B(p_n))``, the (projected) feature of view B at ``p_n``;
    - ``v_n = g(warp(f_A, ψ)(p_n)) = g(f_A(p_n + ψ(p_n)))``, the corresponding feature of view A
      (linear interpolation);
    - ``g`` is the optional :py:class:`VoxelProjectionHead`, followed by L2 normalisation.

    **Loss** (``s`` = cosine similarity, ``τ`` = ``temperature``), averaged over the ``N`` anchors of
    the whole batch (negatives come from all images in the batch)::

        L = 1/(2N) Σ_n [ −s(u_n, v_n)/τ + log( Σ_m e^{s(u_n, v_m)/τ} + Σ_{m≠n} e^{s(u_n, u_m)/τ} ) ]
          + 1/(2N) Σ_n [ the same with u and v swapped ]

    ``exclusion_radius = r > 0`` drops from the negatives every voxel ``m`` of the same image with
    ``‖p_m − p_n‖₂ ≤ r`` (voxels of view B's grid): near neighbours of the anchor are then not pushed
    away, the knob for studying over-dispersion. Minimum: with perfectly matching positives and
    mutually orthogonal negatives the loss is ``log(1 + 2(N − 1)e^{−1/τ})``; it is 0 when every
    negative is excluded.

    **Parameters.** With ``in_channels`` set, the loss owns a projection head: add its parameters to
    the optimiser, e.g. ``Adam([*net.parameters(), *loss.parameters()])``, and save ``loss.state_dict()``
    with the network if training is resumed. Without ``in_channels`` the features are compared directly.

    Args:
        in_channels: channels of ``features_a``/``features_b``; ``None`` means no projection head.
        projection_channels: hidden widths then output width of the head (used with ``in_channels``).
        num_samples: voxels sampled per batch element (vox2vec: 1024).
        temperature: ``τ`` (default 0.1, as vox2vec).
        exclusion_radius: radius ``r`` in voxels; ``0`` keeps every negative.
        generator: optional ``torch.Generator`` for the voxel draw (default: torch's global RNG).
        reduction: ``"mean"`` (default) or ``"sum"`` over anchors, or ``"none"`` for the ``(N,)``
            per-anchor losses.
        features_a_key, features_b_key: keys of the network output.
        ddf_key, overlap_key: keys of the target; a missing overlap is computed with
            :py:func:`monai_cover.ddf.overlap_mask`.

    Inputs of ``forward(input, target)``:
        - ``input[features_a_key]``, ``input[features_b_key]``: ``(B, C, *S)`` finest features of
          view A and view B (``CoverNet`` output);
        - ``target[ddf_key]``: ``(B, d, *S)`` ground-truth field in voxels;
        - ``target[overlap_key]``: ``(B, 1, *S)`` overlap mask (optional).

    Example::

        loss = VoxelInfoNCELoss(in_channels=32, num_samples=1024)
        opt = torch.optim.Adam([*net.parameters(), *loss.parameters()], lr=3e-4)
        value = loss(net(batch["view_a"], batch["view_b"]), {"ddf": batch["ddf"], "overlap": batch["overlap"]})
    """

    def __init__(
        self,
        in_channels: int | None = None,
        projection_channels: Sequence[int] = (256, 128),
        num_samples: int = 1024,
        temperature: float = 0.1,
        exclusion_radius: float = 0.0,
        generator: torch.Generator | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        features_a_key: str = "features_a",
        features_b_key: str = "features_b",
        ddf_key: str = "ddf",
        overlap_key: str = "overlap",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if int(num_samples) < 1:
            raise ValueError(f"VoxelInfoNCELoss: num_samples must be >= 1, got {num_samples}.")
        if not float(temperature) > 0:
            raise ValueError(f"VoxelInfoNCELoss: temperature must be > 0, got {temperature}.")
        if float(exclusion_radius) < 0:
            raise ValueError(f"VoxelInfoNCELoss: exclusion_radius must be >= 0, got {exclusion_radius}.")
        self.head = VoxelProjectionHead(in_channels, projection_channels) if in_channels is not None else None
        self.in_channels = in_channels
        self.num_samples = int(num_samples)
        self.temperature = float(temperature)
        self.exclusion_radius = float(exclusion_radius)
        self.generator = generator
        self.features_a_key, self.features_b_key = features_a_key, features_b_key
        self.ddf_key, self.overlap_key = ddf_key, overlap_key

    def _inputs(self, input: Mapping, target: Mapping) -> tuple[torch.Tensor, ...]:
        for name, mapping, keys in (
            ("input", input, (self.features_a_key, self.features_b_key)),
            ("target", target, (self.ddf_key,)),
        ):
            if not isinstance(mapping, Mapping) or any(k not in mapping for k in keys):
                got = sorted(mapping) if isinstance(mapping, Mapping) else type(mapping).__name__
                raise ValueError(f"VoxelInfoNCELoss: {name} must be a mapping with keys {list(keys)}, got {got}.")
        fa, fb, ddf = input[self.features_a_key], input[self.features_b_key], target[self.ddf_key]
        spatial_dims = fb.ndim - 2
        if spatial_dims not in (2, 3) or fa.shape != fb.shape:
            raise ValueError(
                f"VoxelInfoNCELoss: features_a and features_b must both be (B, C, H, W[, D]), got "
                f"{tuple(fa.shape)} and {tuple(fb.shape)}."
            )
        if self.in_channels is not None and fb.shape[1] != self.in_channels:
            raise ValueError(f"VoxelInfoNCELoss: expected {self.in_channels} feature channels, got {tuple(fb.shape)}.")
        expected = (fb.shape[0], spatial_dims, *fb.shape[2:])
        if tuple(ddf.shape) != expected:
            raise ValueError(f"VoxelInfoNCELoss: ddf must be {expected} to match features {tuple(fb.shape)}, got "
                             f"{tuple(ddf.shape)}.")
        overlap = target.get(self.overlap_key) if isinstance(target, Mapping) else None
        if overlap is None:
            overlap = overlap_mask(ddf.detach())
        if tuple(overlap.shape) != (fb.shape[0], 1, *fb.shape[2:]):
            raise ValueError(f"VoxelInfoNCELoss: overlap must be {(fb.shape[0], 1, *fb.shape[2:])}, got "
                             f"{tuple(overlap.shape)}.")
        return fa, fb, ddf, overlap

    def forward(self, input: Mapping, target: Mapping) -> torch.Tensor:  # type: ignore[override]
        """Return the loss (scalar for ``"mean"``/``"sum"``, ``(N,)`` for ``"none"``)."""
        fa, fb, ddf, overlap = self._inputs(input, target)
        batch_idx, flat_idx = sample_overlap_voxels(overlap, self.num_samples, self.generator)
        if flat_idx.numel() == 0:  # no overlap anywhere: keep the graph, contribute nothing
            if self.reduction == LossReduction.NONE.value:
                return fb.new_zeros(0)
            return (fb.sum() + fa.sum()) * 0.0
        fa_on_b = warp(fa, ddf.detach().to(fa.dtype))  # f_A(p + ψ(p)) on view B's grid
        u = fb.flatten(2)[batch_idx, :, flat_idx]  # (N, C)
        v = fa_on_b.flatten(2)[batch_idx, :, flat_idx]
        if self.head is not None:
            uv = self.head(torch.cat([u, v], dim=0))
            u, v = uv[: u.shape[0]], uv[u.shape[0]:]
        exclude = None
        if self.exclusion_radius > 0:
            coords = identity_grid(fb.shape[2:], device=fb.device).flatten(1).t()[flat_idx]  # (N, d)
            same_image = batch_idx[:, None] == batch_idx[None, :]
            exclude = same_image & (torch.cdist(coords, coords) <= self.exclusion_radius)
        per_anchor = voxel_nt_xent(u, v, self.temperature, exclude)
        return reduce_per_sample(per_anchor, self.reduction)
