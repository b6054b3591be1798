# SPDX-License-Identifier: Apache-2.0
"""Cross-entropy of the mixture of vectors' attention against a known offset distribution (a local matching loss).

With ``log a_h(p, o)`` the attention of head ``h`` at voxel ``p`` over the neighbourhood's offsets
(:py:func:`~monai_cover.networks.blocks.neighbourhood.neighbourhood_log_softmax`) and ``t(p, o)`` the true offset
distribution (:py:func:`~monai_cover.networks.blocks.neighbourhood.offset_distribution`)::

    L_match = sum_eps mean_h ( -sum_o t(p, o) log a_h(p, o) ) / sum_eps 1

Unlike an L1 loss on the expected offset ``sum_o a_h(p, o) o``, which any attention with the right mean satisfies
(a flat one for a zero displacement), it is minimal only when the attention sits on the true offsets: the features
must tell a voxel from its neighbours, which is what a segmenter reading them needs.
"""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cover.losses.utils import _check_mask, _masked_reduce, _plain, _work_dtype

__all__ = ["OffsetCrossEntropyLoss"]


class OffsetCrossEntropyLoss(_Loss):
    """``L_match`` of the module docstring, in nats.

    Args:
        reduction: ``"mean"`` (default): over the masked voxels of the batch; ``"sum"``; ``"none"``: per sample
            ``(B,)``.

    Examples::

        log_probs = neighbourhood_log_softmax(query, key, radius=2)   # (B, heads, 25, H, W)
        target = offset_distribution(true_residual, radius=2)         # (B, 25, H, W)
        OffsetCrossEntropyLoss()(log_probs, target, mask)             # scalar
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input: ``(B, heads, K, *S)`` log-probabilities over ``K`` offsets (``-inf`` allowed where the target
                is 0).
            target: ``(B, K, *S)`` offset distribution (non-negative, summing to 1 over ``K``).
            mask: ``(B, 1, *S)`` (or ``(B, *S)``) voxels to score; ``None``: all.
        """
        name = type(self).__name__
        input, target, mask = _plain(input, target, mask)
        if input.ndim != target.ndim + 1 or input.shape[0] != target.shape[0] or input.shape[2:] != target.shape[1:]:
            raise ValueError(
                f"{name}: input must be log-probabilities (B, heads, K, *S) and target (B, K, *S) with the same B, K "
                f"and S, got {tuple(input.shape)} and {tuple(target.shape)}."
            )
        if target.ndim not in (4, 5):
            raise ValueError(f"{name}: target must be (B, K, *S) with 2 or 3 spatial dims, got {tuple(target.shape)}.")
        like = target[:, :1]
        mask = _check_mask(mask, like, name)
        dtype = _work_dtype(input, target)
        with torch.autocast(device_type=input.device.type, enabled=False):
            weight = target.to(dtype).unsqueeze(1)
            log_probs = input.to(dtype)
            # where, not a product: an offset outside the image has log-probability -inf and weight 0
            terms = torch.where(weight > 0, weight * log_probs, torch.zeros((), dtype=dtype, device=input.device))
            values = -terms.sum(2).mean(1, keepdim=True)
            return _masked_reduce(values, mask, self.reduction, name)
