# SPDX-License-Identifier: Apache-2.0
"""Over-dispersion diagnostics of voxel features: COVER's central claim, measured.

COVER (Y. He & S. Li, "Vector Contrastive Learning For Pixel-Wise Pretraining In Medical Vision",
ICCV 2025) argues that binary dense contrast pushes apart voxels of the same structure, so that
features *over-disperse*: the intra-class similarity falls towards the inter-class similarity and
the feature cloud spreads over many dimensions. For a backbone and a labelled volume this module
reports:

- ``intra_cosine``: mean over classes ``c`` of the mean pairwise cosine similarity of distinct voxels
  of ``c``, ``intra_c = 1/(n_c(n_c−1)) Σ_{i≠j∈c} ẑ_i·ẑ_j`` with ``ẑ = f/‖f‖``;
- ``inter_cosine``: mean over class pairs ``c < c'`` of ``inter_{c,c'} = 1/(n_c n_c') Σ_{i∈c, j∈c'} ẑ_i·ẑ_j``;
- ``ratio = intra_cosine / inter_cosine`` (NaN when ``inter_cosine ≤ 1e-9``; ``gap = intra − inter`` is
  always defined). Over-dispersed features have a small ratio and gap;
- ``effective_rank``: the entropy effective rank of the centred feature matrix (O. Roy & M. Vetterli,
  "The effective rank: a measure of effective dimensionality", EUSIPCO 2007):
  ``erank = exp(−Σ_k p_k log p_k)``, ``p_k = σ_k / Σ_j σ_j`` with ``σ`` its singular values;
  ``k`` equal singular values give exactly ``k``;
- ``embedding_collapse``: the scores of MONAI's ``EmbeddingCollapseMetric`` (MONAI ≥ 1.6) on the same
  sample, when importable (all in [0, 1], higher = more collapsed).

The cosine statistics are exact over all labelled voxels (sums of unit vectors, ``O(N·C)``); the
effective rank and MONAI's scores use a class-stratified sample of at most ``max_voxels`` voxels.
Voxels whose feature is zero count as unit vectors of cosine 0 with everything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.utils import convert_to_tensor, optional_import

from monai_cover.networks.utils import as_pyramid

__all__ = ["effective_rank", "feature_dispersion", "extract_features", "dispersion_report", "format_dispersion"]

#: ``inter_cosine`` at or below this gives ``ratio = NaN`` (orthogonal or opposed classes)
_RATIO_EPS = 1e-9

_compute_collapse, _has_collapse = optional_import(
    "monai.metrics.embedding_collapse", name="compute_embedding_collapse"
)


def effective_rank(features: torch.Tensor, center: bool = True) -> float:
    """Entropy effective rank (Roy & Vetterli 2007) of ``features`` ``(N, C)``.

    ``erank = exp(H(p))``, ``p_k = σ_k / Σ σ``, ``σ`` the singular values of the (column-centred when
    ``center``) matrix; ``1 ≤ erank ≤ rank``; 0 for a zero matrix. Rank-``k`` features with equal
    singular values give ``k``. Centring matches MONAI's ``EmbeddingCollapseMetric``.
    """
    if features.ndim != 2 or features.shape[0] < 1:
        raise ValueError(f"effective_rank: features must be (N, C) with N >= 1, got {tuple(features.shape)}.")
    x = features.detach().to(torch.float64)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    sv = torch.linalg.svdvals(x)
    total = sv.sum()
    if total <= 0:
        return 0.0
    p = sv / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _flatten(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C)`` features and ``(N,)`` long labels from ``(B, C, *S)``/``(B, 1, *S)`` or ``(N, C)``/``(N,)``."""
    if features.ndim == 2:
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"feature_dispersion: with (N, C) features labels must be (N,), got features "
                             f"{tuple(features.shape)} and labels {tuple(labels.shape)}.")
        return features, labels.long()
    if features.ndim < 3:
        raise ValueError(f"feature_dispersion: features must be (B, C, *S) or (N, C), got {tuple(features.shape)}.")
    if labels.ndim == features.ndim - 1:
        labels = labels[:, None]
    if labels.ndim != features.ndim or labels.shape[1] != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"feature_dispersion: labels must be (B, 1, *S) to match features {tuple(features.shape)}, "
                         f"got {tuple(labels.shape)}.")
    if labels.shape[2:] != features.shape[2:]:  # e.g. coarse features: bring the labels to their grid
        labels = F.interpolate(labels.float(), size=tuple(features.shape[2:]), mode="nearest")
    flat = features.flatten(2).transpose(1, 2).reshape(-1, features.shape[1])
    return flat, labels.reshape(-1).long()


def _stratified(labels: torch.Tensor, classes: list[int], max_voxels: int | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """Indices of at most ``max_voxels`` voxels, an equal share per class (all of a smaller class)."""
    if max_voxels is None or labels.numel() <= max_voxels:
        return torch.nonzero(torch.isin(labels, torch.tensor(classes, device=labels.device))).flatten()
    share = max(2, int(max_voxels) // max(1, len(classes)))
    picked = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() > share:
            perm = torch.randperm(idx.numel(), generator=generator, device=generator.device if generator else "cpu")
            idx = idx[perm[:share].to(idx.device)]
        picked.append(idx)
    return torch.cat(picked)


def feature_dispersion(
    features: torch.Tensor,
    labels: torch.Tensor,
    max_voxels: int | None = 20000,
    ignore_background: bool = True,
    background: int = 0,
    ignore_index: int | None = None,
    generator: torch.Generator | None = None,
    collapse_metric: bool = True,
) -> dict[str, Any]:
    """Intra- vs inter-class cosine similarity, their ratio and the effective rank of voxel features.

    Definitions are in the module docstring (this module's docstring).

    Args:
        features: ``(B, C, *S)`` feature maps or ``(N, C)`` vectors.
        labels: ``(B, 1, *S)`` (or ``(B, *S)``) integer label maps, resized with nearest neighbour when the
            feature grid differs; or ``(N,)`` labels for vector input.
        max_voxels: size of the class-stratified sample used for the effective rank and MONAI's scores
            (``None``: all voxels). The cosine statistics always use every labelled voxel.
        ignore_background: leave out voxels labelled ``background``.
        background: the background label.
        ignore_index: another label to leave out (e.g. unlabelled voxels).
        generator: ``torch.Generator`` for the sample (default: torch's global RNG).
        collapse_metric: also report MONAI's ``EmbeddingCollapseMetric`` scores when available.

    Returns:
        a dict of floats and small containers: ``intra_cosine``, ``inter_cosine``, ``ratio``, ``gap``,
        ``effective_rank``, ``max_rank`` (``min(n − 1, C)`` of the sample), ``num_voxels``,
        ``num_sampled``, ``num_classes``, ``classes``, ``per_class`` (``{label: {"count", "intra_cosine",
        "effective_rank"}}``), ``inter_matrix`` (``K × K`` nested list; diagonal = intra) and
        ``embedding_collapse`` (``{name: float | None}``, ``None`` when MONAI lacks the metric or
        ``collapse_metric`` is False).
    """
    flat, lab = _flatten(features.detach(), labels.detach())
    keep = torch.ones_like(lab, dtype=torch.bool)
    if ignore_background:
        keep &= lab != int(background)
    if ignore_index is not None:
        keep &= lab != int(ignore_index)
    flat, lab = flat[keep].to(torch.float64), lab[keep]
    classes = sorted(int(c) for c in torch.unique(lab).tolist())
    if flat.shape[0] < 2 or not classes:
        raise ValueError(f"feature_dispersion: need at least 2 labelled voxels, got {flat.shape[0]} "
                         f"(classes {classes}, ignore_background={ignore_background}).")
    z = F.normalize(flat, dim=1)
    onehot = (lab[:, None] == torch.tensor(classes, device=lab.device)[None]).to(z.dtype)  # (N, K)
    counts = onehot.sum(0)  # (K,)
    sums = onehot.t() @ z  # (K, C): Σ_{i∈c} ẑ_i
    sq_norms = onehot.t() @ (z * z).sum(1)  # Σ_{i∈c} ‖ẑ_i‖² (1, or 0 for zero features)
    dots = sums @ sums.t()  # (K, K)
    pair_counts = counts[:, None] * counts[None, :]
    inter_matrix = dots / pair_counts
    intra = (torch.diagonal(dots) - sq_norms) / (counts * (counts - 1)).clamp(min=1)
    intra = torch.where(counts >= 2, intra, torch.full_like(intra, math.nan))
    inter_matrix.diagonal().copy_(intra)
    k = len(classes)
    valid_intra = intra[~torch.isnan(intra)]
    intra_cos = float(valid_intra.mean()) if valid_intra.numel() else math.nan
    if k >= 2:
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=z.device), diagonal=1)
        inter_cos = float(inter_matrix[upper].mean())
    else:
        inter_cos = math.nan
    ratio = intra_cos / inter_cos if inter_cos > _RATIO_EPS else math.nan

    idx = _stratified(lab, classes, max_voxels, generator)
    sample, sample_lab = flat[idx], lab[idx]
    per_class = {}
    for j, c in enumerate(classes):
        members = sample[sample_lab == c]
        per_class[c] = {
            "count": int(counts[j]),
            "intra_cosine": float(intra[j]),
            "effective_rank": effective_rank(members) if members.shape[0] >= 2 else math.nan,
        }
    report: dict[str, Any] = {
        "intra_cosine": intra_cos,
        "inter_cosine": inter_cos,
        "ratio": ratio,
        "gap": intra_cos - inter_cos if k >= 2 else math.nan,
        "effective_rank": effective_rank(sample),
        "max_rank": int(min(sample.shape[0] - 1, sample.shape[1])),
        "num_voxels": int(flat.shape[0]),
        "num_sampled": int(sample.shape[0]),
        "num_classes": k,
        "classes": classes,
        "per_class": per_class,
        "inter_matrix": inter_matrix.tolist(),
        "embedding_collapse": None,
    }
    if collapse_metric and _has_collapse:
        scores = _compute_collapse(
            sample.float(), sample_lab, include_indicators=["centroid_similarity", "effective_rank"], reduction="none"
        )
        report["embedding_collapse"] = {name: (None if v is None else float(v)) for name, v in scores.items()}
    return report


def _select(output: Any, output_key: str | None, level: int) -> torch.Tensor:
    if isinstance(output, Mapping) and output_key is not None:
        output = output[output_key]
    return as_pyramid(output)[level]


def extract_features(
    network: torch.nn.Module,
    image: torch.Tensor,
    output_key: str | None = None,
    level: int = -1,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 1,
    overlap: float = 0.25,
    device: torch.device | str | None = None,
    spatial_dims: int | None = None,
) -> torch.Tensor:
    """Voxel features of ``image`` from ``network`` in eval mode, without gradients.

    Args:
        network: a backbone returning a tensor, a pyramid (list of maps, coarse to fine) or a mapping.
        image: ``(B, C, *S)`` or ``(C, *S)``; a 4D tensor is read as one 3D volume ``(C, H, W, D)``
            unless ``spatial_dims=2`` (or a 2-entry ``roi_size``) says it is a 2D batch.
        output_key: key of a mapping output (the pyramid or the feature map under it).
        level: pyramid level to return (default ``-1``, the finest).
        roi_size: run MONAI's ``sliding_window_inference`` with this window (``None``: one call).
        sw_batch_size, overlap: sliding-window settings.
        device: where to run (default: the network's device).
        spatial_dims: 2 or 3 (default: from ``roi_size``, else 3 for 4D/5D input and 2 for 3D input).

    Returns:
        ``(B, C_f, *S_f)`` features on the CPU (training mode of ``network`` is restored).
    """
    if spatial_dims is None:
        spatial_dims = len(roi_size) if roi_size is not None else (3 if image.ndim in (4, 5) else 2)
    if image.ndim not in (spatial_dims + 1, spatial_dims + 2):
        raise ValueError(f"extract_features: image must be (B, C, *S) or (C, *S) with {spatial_dims} spatial dims, "
                         f"got {tuple(image.shape)}.")
    try:
        net_device = next(network.parameters()).device
    except StopIteration:
        net_device = torch.device("cpu")
    device = torch.device(device) if device is not None else net_device
    x = convert_to_tensor(image, track_meta=False).float()
    if x.ndim == spatial_dims + 1:
        x = x[None]
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            x = x.to(device)

            def run(t: torch.Tensor) -> torch.Tensor:
                return _select(network(t), output_key, level)

            if roi_size is None:
                out = run(x)
            else:
                from monai.inferers import sliding_window_inference

                out = sliding_window_inference(x, roi_size, sw_batch_size, run, overlap=overlap)
    finally:
        network.train(was_training)
    return out.detach().cpu()


def dispersion_report(network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, *,
                      output_key: str | None = None, level: int = -1, roi_size: Sequence[int] | None = None,
                      **dispersion_kwargs: Any) -> dict[str, Any]:
    """:py:func:`extract_features` then :py:func:`feature_dispersion` on a labelled volume.

    ``image`` ``(C, *S)`` or ``(B, C, *S)``; ``label`` ``(1, *S)`` or ``(B, 1, *S)``. Other keyword
    arguments go to :py:func:`feature_dispersion`.
    """
    features = extract_features(network, image, output_key=output_key, level=level, roi_size=roi_size)
    lab = convert_to_tensor(label, track_meta=False)
    if lab.ndim == features.ndim - 1:  # (1, *S) -> (1, 1, *S)
        lab = lab[None]
    return feature_dispersion(features, lab, **dispersion_kwargs)


def format_dispersion(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table, one row per named report (e.g. per pretraining method), for benchmark reports."""
    header = "| model | intra cos | inter cos | ratio | gap | eff. rank | max rank | voxels |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, r in reports.items():
        lines.append(
            f"| {name} | {r['intra_cosine']:.3f} | {r['inter_cosine']:.3f} | {r['ratio']:.3f} | {r['gap']:.3f} | "
            f"{r['effective_rank']:.2f} | {r['max_rank']} | {r['num_voxels']} |"
        )
    return "\n".join(lines)
