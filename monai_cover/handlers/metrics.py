# SPDX-License-Identifier: Apache-2.0
"""Pretext metrics of COVER pretraining as Ignite handlers: thin wrappers of :py:mod:`monai_cover.metrics`.

All read an evaluator's output ``{"pred": CoverNet output, "label": {"ddf", "overlap"}}`` (what
``SupervisedEvaluator`` stores with ``monai_cover.engines.CoverPrepareBatch``, with ``decollate=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monai.handlers import IgniteMetricHandler

from monai_cover.metrics import (
    CorrespondenceAccuracyMetric,
    DDFEndPointErrorMetric,
    FeatureCollapseMetric,
    OverlapCosineMetric,
)

__all__ = [
    "CorrespondenceAccuracy",
    "DDFEndPointError",
    "FeatureCollapse",
    "OverlapCosine",
    "cover_output_transform",
]


def cover_output_transform(output: Any) -> tuple[Mapping, Mapping]:
    """``(pred, target)`` from an evaluator's output (a dict, or a one-item decollated list)."""
    if isinstance(output, (list, tuple)) and len(output) > 0 and isinstance(output[0], Mapping):
        if len(output) != 1:
            raise ValueError("COVER metrics need decollate=False on the evaluator (got a decollated batch).")
        output = output[0]
    return output["pred"], output["label"]


class DDFEndPointError(IgniteMetricHandler):
    """:py:class:`~monai_cover.metrics.DDFEndPointErrorMetric` on an evaluator: mean end-point error in voxels
    over the overlap (``relative=True``: relative to predicting zero)."""

    def __init__(self, relative: bool = False, output_transform: Callable = cover_output_transform) -> None:
        super().__init__(DDFEndPointErrorMetric(relative=relative), output_transform=output_transform,
                         save_details=False)


class OverlapCosine(IgniteMetricHandler):
    """:py:class:`~monai_cover.metrics.OverlapCosineMetric` on an evaluator: mean cosine of view B's finest
    features and view A's warped by the true field, over the overlap."""

    def __init__(self, level: int = -1, output_transform: Callable = cover_output_transform) -> None:
        super().__init__(OverlapCosineMetric(level=level), output_transform=output_transform, save_details=False)


class CorrespondenceAccuracy(IgniteMetricHandler):
    """:py:class:`~monai_cover.metrics.CorrespondenceAccuracyMetric` on an evaluator: fraction of sampled view-B
    voxels whose nearest view-A feature lies within ``tolerance`` voxels of the true match."""

    def __init__(self, num_samples: int = 512, tolerance: float = 2.0, seed: int = 0,
                 output_transform: Callable = cover_output_transform) -> None:
        metric = CorrespondenceAccuracyMetric(num_samples=num_samples, tolerance=tolerance, seed=seed)
        super().__init__(metric, output_transform=output_transform, save_details=False)


class FeatureCollapse(IgniteMetricHandler):
    """:py:class:`~monai_cover.metrics.FeatureCollapseMetric` on an evaluator: ``"effective_rank"`` or
    ``"mean_cosine"`` of the finest features of both views, on voxels sampled from the overlap."""

    def __init__(self, statistic: str = "effective_rank", num_samples: int = 256, seed: int = 0,
                 output_transform: Callable = cover_output_transform) -> None:
        metric = FeatureCollapseMetric(statistic=statistic, num_samples=num_samples, seed=seed)
        super().__init__(metric, output_transform=output_transform, save_details=False)
