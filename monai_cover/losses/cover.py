# SPDX-License-Identifier: Apache-2.0
"""COVER's losses: masked vector regression of the displacement, and feature consistency under the true one.

With ``eps`` the overlap mask (1 where ``p + ddf(p)`` falls inside view A, see :py:func:`monai_cover.ddf.overlap_mask`)
and ``sum_eps`` a sum over the voxels of the whole batch where ``eps = 1``::

    L_vec = sum_eps sum_i |ddf_i - pred_i| / sum_eps 1
    L_con = 1 - sum_eps cos(f_B, warp(f_A, ddf)) / sum_eps 1
    L     = vector_weight * L_vec + consistency_weight * L_con + spread_weight * L_spread   (1:1:1 by default)

``L_spread`` is VICReg's variance + covariance terms (:py:mod:`monai_cover.losses.spread`), our addition: the paper's
objective (``CoverLoss.paper()``) has no such term and lets ``L_con`` collapse the features.

Displacement convention: :py:mod:`monai_cover.ddf`. All arithmetic runs in float32 (float64 for float64 inputs),
also under autocast. An empty mask gives a finite zero loss (connected to the graph, zero gradient) and a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cover.ddf import overlap_mask, warp
from monai_cover.losses.levels import LevelVectorRegressionLoss
from monai_cover.losses.matching import OffsetCrossEntropyLoss
from monai_cover.losses.spread import FeatureSpreadLoss
from monai_cover.losses.utils import _check_mask, _masked_reduce, _plain, _work_dtype, channel_cosine
from monai_cover.losses.voxel_infonce import VoxelInfoNCELoss

__all__ = ["VectorRegressionLoss", "FeatureConsistencyLoss", "CoverLoss"]


class VectorRegressionLoss(_Loss):
    """Masked L1 between displacement fields: ``sum_eps sum_i |input_i - target_i| / sum_eps 1``.

    The per-voxel error is the L1 norm over the ``spatial_dims`` components (summed, not averaged), in voxels.

    Args:
        reduction: ``"mean"`` (default): over the masked voxels of the whole batch; ``"sum"``: the masked sum
            over the batch; ``"none"``: the masked mean per sample, shape ``(B,)``.

    Examples::

        loss = VectorRegressionLoss()
        loss(pred_ddf, true_ddf, overlap)  # (B, d, *S), (B, d, *S), (B, 1, *S) -> scalar in voxels
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input: predicted displacement ``(B, d, *S)`` (``d = len(S)``), voxels.
            target: true displacement, same shape.
            mask: overlap ``(B, 1, *S)`` (or ``(B, *S)``); ``None`` uses every voxel.
        """
        name = type(self).__name__
        input, target, mask = _plain(input, target, mask)
        if input.shape != target.shape:
            raise ValueError(
                f"{name}: input {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape."
            )
        if input.ndim < 3 or input.shape[1] != input.ndim - 2:
            raise ValueError(
                f"{name}: input must be a displacement (B, spatial_dims, *spatial) with one channel per spatial "
                f"axis, got {tuple(input.shape)}."
            )
        mask = _check_mask(mask, input, name)
        dtype = _work_dtype(input, target)
        with torch.autocast(device_type=input.device.type, enabled=False):
            error = (input.to(dtype) - target.to(dtype)).abs().sum(1, keepdim=True)
            return _masked_reduce(error, mask, self.reduction, name)


class FeatureConsistencyLoss(_Loss):
    """``1 - sum_eps cos(features_b, warp(features_a, ddf)) / sum_eps 1``: view B's features against view A's features
    brought onto view B's grid with the **ground-truth** displacement (cosine over the channel axis).

    Args:
        reduction: ``"mean"`` (default): ``1 -`` the mean cosine over the masked voxels of the whole batch;
            ``"sum"``: ``sum_eps (1 - cos)`` over the batch; ``"none"``: per sample, shape ``(B,)``.
        eps: the ``eps`` of ``torch.nn.functional.cosine_similarity`` (zero vectors give cosine 0).
        stop_gradient: ``None`` (default, the reference): gradients reach both views' features; ``"a"`` or ``"b"``:
            that view's features are a fixed target (SimSiam-style stop-gradient, a guard against collapse).

    Examples::

        loss = FeatureConsistencyLoss()
        loss(out["features_b"], out["features_a"], true_ddf, overlap)  # scalar in [0, 2]
    """

    def __init__(
        self, reduction: LossReduction | str = LossReduction.MEAN, eps: float = 1e-8, stop_gradient: str | None = None
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if not eps > 0:
            raise ValueError(f"FeatureConsistencyLoss: eps must be > 0, got {eps}.")
        if stop_gradient not in (None, "a", "b"):
            raise ValueError(f"FeatureConsistencyLoss: stop_gradient must be None, 'a' or 'b', got {stop_gradient!r}.")
        self.eps = float(eps)
        self.stop_gradient = stop_gradient

    def forward(
        self,
        features_b: torch.Tensor,
        features_a: torch.Tensor,
        ddf: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            features_b: ``(B, C, *S)`` features of view B (2 or 3 spatial dims).
            features_a: ``(B, C, *S)`` features of view A.
            ddf: ``(B, d, *S)`` ground-truth displacement (voxels), ``view_b = warp(view_a, ddf)``.
            mask: overlap ``(B, 1, *S)`` (or ``(B, *S)``); ``None`` uses every voxel.
        """
        name = type(self).__name__
        features_b, features_a, ddf, mask = _plain(features_b, features_a, ddf, mask)
        if features_a.shape != features_b.shape:
            raise ValueError(
                f"{name}: features_b {tuple(features_b.shape)} and features_a {tuple(features_a.shape)} must have the "
                "same shape."
            )
        if features_b.ndim not in (4, 5):
            raise ValueError(
                f"{name}: features must be (B, C, *spatial) with 2 or 3 spatial dims, got {tuple(features_b.shape)}."
            )
        expected = (features_b.shape[0], features_b.ndim - 2, *features_b.shape[2:])
        if tuple(ddf.shape) != expected:
            raise ValueError(
                f"{name}: ddf must have shape {expected} to match features {tuple(features_b.shape)}, "
                f"got {tuple(ddf.shape)}."
            )
        mask = _check_mask(mask, features_b, name)
        dtype = _work_dtype(features_a, features_b, ddf)
        if self.stop_gradient == "a":
            features_a = features_a.detach()
        elif self.stop_gradient == "b":
            features_b = features_b.detach()
        with torch.autocast(device_type=features_b.device.type, enabled=False):
            warped = warp(features_a.to(dtype), ddf.to(dtype))
            cos = channel_cosine(features_b.to(dtype), warped, eps=self.eps)
            return _masked_reduce(1.0 - cos, mask, self.reduction, name)


class CoverLoss(_Loss):
    """COVER's objective ``vector_weight * L_vec + consistency_weight * L_con`` on dicts, as MONAI's
    ``SupervisedTrainer`` calls it: ``loss_function(network_output, targets)``.

    Args:
        vector_weight: weight of :py:class:`VectorRegressionLoss` (default 1).
        consistency_weight: weight of :py:class:`FeatureConsistencyLoss` (default 1). A zero weight skips the term
            (its inputs are then not needed).
        reduction: ``"mean"`` / ``"sum"`` / ``"none"`` (per sample ``(B,)``), applied to both terms.
        ddf_key, features_a_key, features_b_key: keys of the network output (``CoverNet``'s by default).
        target_ddf_key, overlap_key: keys of the target dict. A missing overlap entry is computed from the
            target displacement with :py:func:`monai_cover.ddf.overlap_mask`.
        consistency_stop_gradient: ``None`` (the reference), ``"a"`` or ``"b"``: see :py:class:`FeatureConsistencyLoss`.
        spread_weight: weight of :py:class:`~monai_cover.losses.FeatureSpreadLoss` (VICReg variance + covariance
            on the same features as ``L_con``); 0 skips it. Default 1: **our deviation from the paper**. In the
            pretext study (``benchmarks/results/pretext_study_*``) ``L_con`` alone collapsed the finest features
            (effective rank 29 -> 9-12 of 32 in 250 steps) and the spread term kept them spread (24.7) with the
            best nearest-neighbour correspondence and no loss of displacement accuracy.
        spread_kwargs: arguments of :py:class:`~monai_cover.losses.FeatureSpreadLoss` (``num_samples``, ``gamma``,
            ``covariance_weight``).

        level_weights: **fine-level option**, ``None`` (default) for none: deep supervision of the head,
            :py:class:`~monai_cover.losses.levels.LevelVectorRegressionLoss` with these weights (one for all levels
            or one per level, coarse to fine) on ``input[fields_key]``, the field after each level
            (``CoverNet(return_fields=True)``) against the true field on that level's grid, in its voxels. The term
            ``"levels"`` enters with weight 1 (the per-level weights are inside it).
        fields_key: key of the per-level fields in the network output.
        infonce_weight: **fine-level option**, 0 (default) for none: weight of a voxel InfoNCE term
            (:py:class:`~monai_cover.losses.VoxelInfoNCELoss` without a projection head, on the same features as
            ``L_con``) -- with ``consistency_weight=spread_weight=0`` the hybrid baseline ``L_vec + InfoNCE``. Not
            with ``reduction="none"`` (InfoNCE is per anchor, not per sample).
        infonce_kwargs: arguments of that ``VoxelInfoNCELoss`` (``num_samples``, ``temperature``,
            ``exclusion_radius``, other feature keys...).

        residual_weight: **fine-level option**, 0 (default) for none: weight of the teacher-forced residual term,
            the mean over the teacher-forced levels of :py:class:`VectorRegressionLoss` between
            ``input["residuals"]`` and ``input["residual_targets"]`` over ``input["residual_masks"]`` (level
            voxels; ``CoverNet`` with ``CoverHead(teacher_forced_levels=...)``, given the true ``ddf``). With a head
            built with ``teacher_forced_target="offsets"`` the residuals are attentions ``(B, heads, K, *S_l)`` and
            the term is :py:class:`~monai_cover.losses.matching.OffsetCrossEntropyLoss` against the true offset
            distribution instead (a matching loss, in nats).

    Features behind a projector (**fine-level option**): build the head with ``feature_projector=(64, 32)``
    (``CoverNet(backbone, feature_projector=(64, 32))``) and pass ``features_a_key="projected_a",
    features_b_key="projected_b"``: ``L_con`` and the spread term then act on the projector's output.

    :py:meth:`paper` is the objective of the paper and the reference code (``L_vec + L_con``, no spread term).
    The loss keeps no state between calls; :py:meth:`terms` gives the unweighted terms for logging and
    :py:attr:`term_weights` their weights.

    Examples::

        loss = CoverLoss()
        out = CoverNet(PyramidUNet(3))(view_a, view_b)
        value = loss(out, {"ddf": true_ddf, "overlap": overlap})
        with torch.no_grad():
            loss.terms(out, {"ddf": true_ddf, "overlap": overlap})  # {"vector": ..., "consistency": ...}
    """

    def __init__(
        self,
        vector_weight: float = 1.0,
        consistency_weight: float = 1.0,
        reduction: LossReduction | str = LossReduction.MEAN,
        ddf_key: str = "ddf",
        features_a_key: str = "features_a",
        features_b_key: str = "features_b",
        target_ddf_key: str = "ddf",
        overlap_key: str = "overlap",
        consistency_stop_gradient: str | None = None,
        spread_weight: float = 1.0,
        spread_kwargs: Mapping | None = None,
        level_weights: float | Sequence[float] | None = None,
        fields_key: str = "fields",
        infonce_weight: float = 0.0,
        infonce_kwargs: Mapping | None = None,
        residual_weight: float = 0.0,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        weights = (("vector_weight", vector_weight), ("consistency_weight", consistency_weight),
                   ("spread_weight", spread_weight), ("infonce_weight", infonce_weight),
                   ("residual_weight", residual_weight))
        for name, w in weights:
            if not float(w) >= 0:
                raise ValueError(f"CoverLoss: {name} must be a number >= 0, got {w}.")
        self.vector_weight, self.consistency_weight = float(vector_weight), float(consistency_weight)
        self.spread_weight = float(spread_weight)
        self.ddf_key, self.features_a_key, self.features_b_key = ddf_key, features_a_key, features_b_key
        self.target_ddf_key, self.overlap_key = target_ddf_key, overlap_key
        self.vector_loss = VectorRegressionLoss(reduction=self.reduction)
        self.consistency_loss = FeatureConsistencyLoss(
            reduction=self.reduction, stop_gradient=consistency_stop_gradient
        )
        self.spread_loss = FeatureSpreadLoss(reduction=self.reduction, **dict(spread_kwargs or {}))
        self.fields_key = fields_key
        self.level_loss = (
            None if level_weights is None else LevelVectorRegressionLoss(level_weights, reduction=self.reduction)
        )
        self.infonce_weight = float(infonce_weight)
        self.residual_weight = float(residual_weight)
        self.match_loss = OffsetCrossEntropyLoss(reduction=self.reduction)
        if self.infonce_weight > 0 and self.reduction == LossReduction.NONE.value:
            raise ValueError("CoverLoss: infonce_weight > 0 needs reduction 'mean' or 'sum' (InfoNCE is per anchor).")
        infonce = dict(features_a_key=features_a_key, features_b_key=features_b_key, ddf_key=target_ddf_key,
                       overlap_key=overlap_key, reduction=self.reduction)
        infonce.update(infonce_kwargs or {})
        self.infonce_loss = VoxelInfoNCELoss(**infonce) if self.infonce_weight > 0 else None
        if self.infonce_loss is not None and self.infonce_loss.head is not None:
            raise ValueError("CoverLoss: the InfoNCE term takes no projection head (in_channels); use the head's "
                             "feature_projector and its keys instead, so that the loss keeps no parameters.")

    @property
    def term_weights(self) -> dict[str, float]:
        """The weight of each term of :py:meth:`terms` in the objective (``"levels"`` carries its per-level weights
        inside and enters with 1)."""
        return {"vector": self.vector_weight, "levels": 1.0, "consistency": self.consistency_weight,
                "spread": self.spread_weight, "infonce": self.infonce_weight, "residual": self.residual_weight}

    @property
    def formula(self) -> str:
        """The weighted sum this loss computes, e.g. ``"L_vec + L_con + L_spread"`` (default) or
        ``"L_vec + L_con"`` (:py:meth:`paper`); terms of weight 0 are left out, other weights than 1 shown."""
        terms = [(self.vector_weight, "L_vec"), (self.consistency_weight, "L_con"), (self.spread_weight, "L_spread"),
                 (self.infonce_weight, "L_infonce"), (self.residual_weight, "L_residual")]
        shown = [name if w == 1.0 else f"{w:g}*{name}" for w, name in terms if w != 0.0]
        if self.level_loss is not None:
            shown.insert(1 if self.vector_weight != 0.0 else 0, "L_levels")
        return " + ".join(shown) or "0"

    @classmethod
    def paper(cls, **kwargs) -> CoverLoss:
        """The objective of the paper and its reference code: ``L_vec + L_con`` with weights 1 and 1, L_con on the
        finest backbone features, gradients through both views, no spread term."""
        return cls(vector_weight=1.0, consistency_weight=1.0, consistency_stop_gradient=None, spread_weight=0.0,
                   **kwargs)

    @staticmethod
    def _get(d: Mapping, key: str, what: str) -> torch.Tensor:
        if key not in d:
            raise KeyError(f"CoverLoss: {what} has no entry {key!r}; its keys are {sorted(map(str, d))}.")
        return d[key]

    def terms(self, input: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The unweighted terms with a non-zero weight: ``{"vector": L_vec, "consistency": L_con, "spread": L_spread}``
        plus ``"levels"`` (deep supervision, per-level weights applied), ``"infonce"`` and ``"residual"`` when those
        options are on
        (each a scalar, or ``(B,)`` with ``reduction="none"``). ``"vector"`` is also computed when all weights are
        zero."""
        if not isinstance(input, Mapping) or not isinstance(target, Mapping):
            raise TypeError(
                f"CoverLoss: input and target must be mappings (CoverNet output and {{'ddf', 'overlap'}}), got "
                f"{type(input).__name__} and {type(target).__name__}."
            )
        true_ddf = self._get(target, self.target_ddf_key, "target")
        mask = target.get(self.overlap_key)
        if mask is None:
            mask = overlap_mask(true_ddf.detach())
        terms: dict[str, torch.Tensor] = {}
        others = self.consistency_weight + self.spread_weight + self.infonce_weight + self.residual_weight
        if self.vector_weight > 0 or (others == 0 and self.level_loss is None):
            terms["vector"] = self.vector_loss(self._get(input, self.ddf_key, "input"), true_ddf, mask)
        if self.level_loss is not None:
            if self.fields_key not in input:
                raise KeyError(f"CoverLoss: level_weights needs the per-level fields {self.fields_key!r} in the "
                               f"input (CoverNet(..., return_fields=True)); its keys are {sorted(map(str, input))}.")
            terms["levels"] = self.level_loss(input[self.fields_key], true_ddf, mask)
        if self.consistency_weight > 0:
            terms["consistency"] = self.consistency_loss(
                self._get(input, self.features_b_key, "input"), self._get(input, self.features_a_key, "input"),
                true_ddf, mask,
            )  # fmt: skip
        if self.spread_weight > 0:
            terms["spread"] = self.spread_loss(
                self._get(input, self.features_a_key, "input"), self._get(input, self.features_b_key, "input"), mask
            )
        if self.infonce_loss is not None:
            terms["infonce"] = self.infonce_loss(input, {**target, self.overlap_key: mask})
        if self.residual_weight > 0:
            missing = [k for k in ("residuals", "residual_targets", "residual_masks") if k not in input]
            if missing:
                raise KeyError(f"CoverLoss: residual_weight needs {missing} in the input: a head with "
                               "teacher_forced_levels > 0, given the true ddf (CoverPrepareBatch(network_ddf=True)).")
            values = [(self.match_loss if p.ndim == t.ndim + 1 else self.vector_loss)(p, t, m) for p, t, m in
                      zip(input["residuals"], input["residual_targets"], input["residual_masks"])]
            if not values:
                raise ValueError("CoverLoss: residual_weight > 0 but the network returned no teacher-forced level.")
            terms["residual"] = sum(values[1:], values[0]) / len(values)
        return terms

    def forward(  # type: ignore[override]
        self, input: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """
        Args:
            input: network output with ``ddf_key`` ``(B, d, *S)`` and, when ``consistency_weight > 0``,
                ``features_a_key`` / ``features_b_key`` ``(B, C, *S)``.
            target: ``target_ddf_key`` ``(B, d, *S)`` and optionally ``overlap_key`` ``(B, 1, *S)``.

        Returns:
            a scalar (``"mean"``, ``"sum"``) or ``(B,)`` (``"none"``).
        """
        weights = self.term_weights
        terms = self.terms(input, target)
        return sum(weights[name] * value for name, value in terms.items())
