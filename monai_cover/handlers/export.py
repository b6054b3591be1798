# SPDX-License-Identifier: Apache-2.0
"""Write the run's model as safetensors beside ``model.pt`` when training ends (what Hugging Face and model hubs
load without unpickling)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ignite.engine import Engine, Events

from monai_cover.weights import save_safetensors

__all__ = ["SafetensorsExportHandler"]

logger = logging.getLogger(__name__)


class SafetensorsExportHandler:
    """On ``Events.COMPLETED``, write ``<source without suffix>.safetensors`` from ``source`` (e.g.
    ``models/model.pt``, whatever the savers attached before this handler left there: the final model of a pretraining
    run, the best one of a fine-tuning run). Nothing is written when ``source`` does not exist (a warning says so).

    Args:
        source: the weights file to convert.
        enabled: ``False`` on the non-zero ranks of a distributed run.
    """

    def __init__(self, source: str | os.PathLike, enabled: bool = True) -> None:
        self.source = Path(source)
        self.target = self.source.with_suffix(".safetensors")
        self.enabled = bool(enabled)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.source.is_file():
            logger.warning("SafetensorsExportHandler: %s does not exist; no %s written.", self.source, self.target.name)
            return
        save_safetensors(self.source, self.target)
        logger.info("weights written as safetensors: %s", self.target)
