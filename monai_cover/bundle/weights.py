# SPDX-License-Identifier: Apache-2.0
"""Loading pretrained backbone weights in a bundle's ``initialize``, with a report file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_cover.bundle.distributed import is_rank_zero
from monai_cover.weights import load_pretrained

__all__ = ["IncompleteWeightsError", "load_backbone_weights"]


class IncompleteWeightsError(RuntimeError):
    """Pretrained weights that do not fill the fine-tuning network (other widths, 2-D vs 3-D, another backbone)."""

    user_error = True  # one ERROR line on a bundle command line (see monai_cover.bundle.install_error_hook)


def load_backbone_weights(
    network: torch.nn.Module,
    source,
    exclude: str | Sequence[str] | None = None,
    report_file: str | os.PathLike | None = None,
    require_all: bool = True,
    **kwargs,
):
    """:py:func:`monai_cover.load_pretrained` for a bundle's ``initialize``: load ``source`` (a pretraining
    output/bundle folder or a ``model.pt``) into ``network``, write the report as JSON to ``report_file``
    (rank 0), and with ``require_all`` raise :py:class:`IncompleteWeightsError` unless EVERY destination key outside
    ``exclude`` was loaded (no missing, shape-mismatched or unexpected keys).

    Returns:
        the :py:class:`~monai_cover.weights.LoadReport`.
    """
    kwargs.setdefault("partial", True)  # shape mismatches are reported below, with the report written first
    report = load_pretrained(network, source, exclude=exclude, **kwargs)
    if report_file is not None and is_rank_zero():
        Path(report_file).parent.mkdir(parents=True, exist_ok=True)
        content = {
            "source": report.source,
            "num_loaded": len(report.loaded),
            "num_network_keys": len(network.state_dict()),
            "loaded": report.loaded,
            "missing": report.missing,
            "unexpected": report.unexpected,
            "mismatched": {k: [list(a), list(b)] for k, (a, b) in report.mismatched.items()},
            "excluded": report.excluded,
        }
        with open(report_file, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
    if require_all and (report.missing or report.mismatched or report.unexpected):
        details = f" Every key is listed in {report_file}." if report_file is not None else ""
        raise IncompleteWeightsError(
            f"pretrained backbone weights did not load completely ({report}). {report.diagnosis(network)} The "
            "fine-tuning network must use the same backbone definition (features, in_channels, spatial_dims) as the "
            f"pretraining run; --pretrained false trains from scratch.{details}"
        )
    return report
