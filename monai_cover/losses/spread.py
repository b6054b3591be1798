# SPDX-License-Identifier: Apache-2.0
"""A guard against collapsing voxel features: VICReg's variance and covariance terms on sampled voxels.

With ``z`` the ``(N, C)`` features of ``N`` voxels drawn from the overlap of one sample (both views)::

    L_var = mean_c relu(gamma - sqrt(var(z_c) + eps))
    L_cov = sum_{c != c'} cov(z)_{c c'}^2 / C
    L     = L_var + covariance_weight * L_cov

(A. Bardes, J. Ponce, Y. LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022.) COVER's consistency term pulls view B's features towards view A's warped ones; on its own
it is minimised by constant features, and these terms keep every channel spread across voxels and the channels
decorrelated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cover.losses.utils import reduce_per_sample

__all__ = ["FeatureSpreadLoss"]


class FeatureSpreadLoss(_Loss):
    """Variance and covariance terms of VICReg on voxel features (see the module docstring).

    Args:
        num_samples: voxels drawn per sample and view from the mask (all when fewer); the draw uses the global
            torch RNG (seed it with ``monai.utils.set_determinism``).
        gamma: target standard deviation of every channel.
        covariance_weight: weight of the covariance term relative to the variance term.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample ``(B,)``).
    """

    def __init__(
        self,
        num_samples: int = 1024,
        gamma: float = 1.0,
        covariance_weight: float = 0.04,
        eps: float = 1e-4,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if int(num_samples) < 2:
            raise ValueError(f"FeatureSpreadLoss: num_samples must be >= 2, got {num_samples}.")
        self.num_samples, self.gamma = int(num_samples), float(gamma)
        self.covariance_weight, self.eps = float(covariance_weight), float(eps)

    def forward(
        self, features_a: torch.Tensor, features_b: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            features_a, features_b: ``(B, C, *S)`` features of both views.
            mask: ``(B, 1, *S)`` voxels to draw from (``None``: all).
        """
        if features_a.shape != features_b.shape or features_a.ndim < 3:
            raise ValueError(
                f"FeatureSpreadLoss: features_a {tuple(features_a.shape)} and features_b {tuple(features_b.shape)} "
                "must be equal and (B, C, *S)."
            )
        per_sample = []
        for b in range(features_a.shape[0]):
            allowed = mask[b].flatten() > 0 if mask is not None else None
            rows = []
            for feats in (features_a[b], features_b[b]):
                flat = feats.flatten(1).float()  # (C, N)
                index = torch.arange(flat.shape[1], device=flat.device)
                if allowed is not None:
                    index = index[allowed]
                if index.numel() > self.num_samples:
                    index = index[torch.randperm(index.numel(), device=flat.device)[: self.num_samples]]
                rows.append(flat[:, index].T)
            z = torch.cat(rows)
            if z.shape[0] < 2:
                per_sample.append(features_a.sum() * 0.0)
                continue
            z = z - z.mean(dim=0, keepdim=True)
            std = torch.sqrt(z.var(dim=0) + self.eps)
            variance = F.relu(self.gamma - std).mean()
            cov = (z.T @ z) / (z.shape[0] - 1)
            off_diagonal = cov - torch.diag(torch.diagonal(cov))
            per_sample.append(variance + self.covariance_weight * off_diagonal.pow(2).sum() / z.shape[1])
        return reduce_per_sample(torch.stack(per_sample), self.reduction)
