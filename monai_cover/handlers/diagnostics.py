# SPDX-License-Identifier: Apache-2.0
"""Where COVER learns, as Ignite handlers: thin wrappers of :py:mod:`monai_cover.metrics.levels` and
:py:mod:`monai_cover.metrics.gradients`.

- :py:class:`LevelEPEHandler` (on an evaluator): the EPE relative to predicting zero after each level of the head
  and each level's share of the EPE gain;
- :py:class:`GradientShareHandler` (on a trainer, every ``interval`` iterations): the share of each loss term's
  gradient norm that reaches each backbone block.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_cover.handlers.metrics import cover_output_transform
from monai_cover.metrics import LevelEPEMetric, backbone_blocks, gradient_shares, term_block_gradient_norms

__all__ = ["LevelEPEHandler", "GradientShareHandler"]


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside DataParallel / DistributedDataParallel."""
    return getattr(network, "module", network)


class LevelEPEHandler:
    """EPE/zero after each level of COVER's head, on an evaluator (see :py:class:`~monai_cover.metrics.LevelEPEMetric`).

    At the end of each evaluation it writes ``engine.state.metrics[f"{name}_{l}"]`` (the ratio after level ``l``,
    0 = coarsest) and ``engine.state.metrics[f"{name}_gain_{l}"]`` (level ``l``'s share of the EPE gain), keeps
    ``{"ratios": [...], "gain_shares": [...]}`` in :py:attr:`last`, and logs one line.

    Args:
        network: the evaluator's ``CoverNet`` (DDP-wrapped or not); when given, its ``return_fields`` is switched on
            for the evaluation only (the trainer then pays nothing). ``None``: the network must already return
            ``"fields"`` (``CoverNet(..., return_fields=True)``).
        name: prefix of the metric names.
        key: the key of the per-level fields in the network output.
        output_transform: ``engine.state.output`` -> ``(pred, target)`` (default: the evaluator's ``"pred"`` and
            ``"label"``, as the other COVER metric handlers; the evaluator needs ``decollate=False``).
        logger_name: the logger to log to (default the engine's logger).
    """

    def __init__(
        self,
        network: torch.nn.Module | None = None,
        name: str = "level_epe",
        key: str = "fields",
        output_transform: Callable = cover_output_transform,
        logger_name: str | None = None,
    ) -> None:
        self.network, self.name, self.key = network, str(name), str(key)
        self.output_transform = output_transform
        self.logger_name = logger_name
        self.metric = LevelEPEMetric(key=self.key)
        self.last: dict[str, list[float]] = {}
        self._previous: bool | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self.metric.reset()
        if self.network is not None:
            net = _unwrap(self.network)
            self._previous = bool(getattr(net, "return_fields", False))
            net.return_fields = True

    def _update(self, engine: Engine) -> None:
        pred, target = self.output_transform(engine.state.output)
        self.metric(pred, target)

    def _completed(self, engine: Engine) -> None:
        if self.network is not None and self._previous is not None:
            _unwrap(self.network).return_fields = self._previous
        ratios = [float(v) for v in self.metric.aggregate()]
        shares = [float(v) for v in self.metric.gain_shares()]
        self.last = {"ratios": ratios, "gain_shares": shares}
        for level, (r, g) in enumerate(zip(ratios, shares)):
            engine.state.metrics[f"{self.name}_{level}"] = r
            engine.state.metrics[f"{self.name}_gain_{level}"] = g
        logger = logging.getLogger(self.logger_name) if self.logger_name else engine.logger
        logger.info(
            "EPE/zero after each head level (coarse to fine): %s; share of the EPE gain: %s",
            " ".join(f"{r:.3f}" for r in ratios), " ".join(f"{g:.2f}" for g in shares),
        )


class GradientShareHandler:
    """Every ``interval`` iterations of a trainer, the norm of each loss term's gradient in each backbone block and
    its share (see :py:mod:`monai_cover.metrics.gradients`).

    It re-runs the network on the iteration's batch (``engine.state.batch`` through ``engine.prepare_batch``, in the
    network's current mode, in full precision, with the RNG state restored afterwards so that training draws the
    same random numbers as without the handler) and calls ``torch.autograd.grad`` once per term: about one forward
    and one backward per term, every ``interval`` iterations. The parameters' ``.grad`` are not touched.

    Each record ``{"iteration", "norms": {term: {block: norm}}, "shares": {term: {block: share}}}`` is appended to
    :py:attr:`history`, written as one JSON line to ``filename`` (when given), and logged as one line per term.

    Args:
        interval: run at every ``interval``-th iteration (default 100).
        loss_function: a loss with ``terms(pred, target)`` (e.g. :py:class:`~monai_cover.losses.CoverLoss`) whose
            terms are weighted by its ``term_weights``; ``None``: the engine's ``loss_function``. A loss without
            ``terms`` is reported as one term ``"loss"``.
        blocks: ``{name: module}`` of the blocks to report; ``None``: :py:func:`~monai_cover.metrics.backbone_blocks`
            of the network's ``backbone`` (the stock network's top-level blocks for a ``FeaturePyramid``).
        filename: a JSON-lines file to append every record to (folders are created); ``None`` for none.
        over: ``"blocks"`` (default): each term's share over the blocks (where its gradient lands); ``"terms"``:
            each block's share over the terms (what drives it).
        logger_name: the logger to log to (default the engine's logger).
    """

    def __init__(
        self,
        interval: int = 100,
        loss_function: torch.nn.Module | None = None,
        blocks: Mapping[str, torch.nn.Module] | None = None,
        filename: str | os.PathLike | None = None,
        over: str = "blocks",
        logger_name: str | None = None,
    ) -> None:
        if int(interval) < 1:
            raise ValueError(f"GradientShareHandler: interval must be >= 1, got {interval}.")
        if over not in ("blocks", "terms"):
            raise ValueError(f"GradientShareHandler: over must be 'blocks' or 'terms', got {over!r}.")
        self.interval, self.loss_function, self.blocks = int(interval), loss_function, blocks
        self.filename = None if filename is None else str(filename)
        self.over, self.logger_name = over, logger_name
        self.history: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def compute(self, engine: Engine) -> dict[str, Any]:
        """The record of the engine's current batch (see the class docstring)."""
        network = _unwrap(engine.network)
        loss = self.loss_function if self.loss_function is not None else engine.loss_function
        inputs, targets, args, kwargs = engine.prepare_batch(
            engine.state.batch, engine.state.device, engine.non_blocking
        )
        blocks = self.blocks if self.blocks is not None else backbone_blocks(network.backbone)
        device = inputs.device if isinstance(inputs, torch.Tensor) else torch.device("cpu")
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            pred = network(inputs, *args, **kwargs)
            if hasattr(loss, "terms"):
                weights = getattr(loss, "term_weights", {})
                terms = {t: v * weights.get(t, 1.0) for t, v in loss.terms(pred, targets).items()}
            else:
                terms = {"loss": loss(pred, targets)}
            norms = term_block_gradient_norms(terms, blocks)
        return {"iteration": int(engine.state.iteration), "norms": norms,
                "shares": gradient_shares(norms, over=self.over)}

    def __call__(self, engine: Engine) -> None:
        record = self.compute(engine)
        self.history.append(record)
        if self.filename is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
            with open(self.filename, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        logger = logging.getLogger(self.logger_name) if self.logger_name else engine.logger
        for outer, inner in record["shares"].items():
            logger.info("gradient share at iteration %d, %s: %s", record["iteration"], outer,
                        " ".join(f"{k} {v:.3f}" for k, v in inner.items()))
