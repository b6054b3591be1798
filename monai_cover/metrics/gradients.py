# SPDX-License-Identifier: Apache-2.0
"""Which backbone blocks each loss term trains: the norm of every term's gradient in every block.

For loss terms ``L_t`` (already weighted as in the objective) and backbone blocks ``b`` (named submodules, e.g. the
top-level blocks of a :py:class:`~monai_cover.networks.FeaturePyramid`'s network: ``conv_0``, ``down_1`` ...
``upcat_1`` for a ``BasicUNet``)::

    g[t][b]         = || d L_t / d theta_b ||_2                    (all parameters of block b together)
    block_share[t][b] = g[t][b] / sum_b' g[t][b']                  (where term t's gradient lands; sums to 1 over b)
    term_share[b][t]  = g[t][b] / sum_t' g[t'][b]                  (which term drives block b; sums to 1 over t)

One ``torch.autograd.grad`` per term on one forward graph: about one backward pass per term, without touching the
parameters' ``.grad`` (the optimiser's gradients are left alone). Cheap enough to run every ``N`` iterations.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

__all__ = ["backbone_blocks", "term_block_gradient_norms", "gradient_shares"]


def backbone_blocks(backbone: nn.Module) -> dict[str, nn.Module]:
    """The named blocks of a backbone whose gradients are reported, in definition order: the direct children that
    hold parameters of the wrapped network for a :py:class:`~monai_cover.networks.FeaturePyramid` (its
    ``.network``), else of ``backbone`` itself (e.g. ``conv_0``, ``down_1`` ... ``down_4``, ``upcat_4`` ...
    ``upcat_1``, ``final_conv`` for a ``BasicUNet``). Pass your own ``{name: module}`` for other groupings."""
    inner = getattr(backbone, "network", backbone)
    if not isinstance(inner, nn.Module):
        inner = backbone
    blocks = {name: m for name, m in inner.named_children() if next(m.parameters(), None) is not None}
    if not blocks:
        raise ValueError(f"backbone_blocks: {type(inner).__name__} has no child module with parameters.")
    return blocks


def term_block_gradient_norms(
    terms: Mapping[str, torch.Tensor], blocks: Mapping[str, nn.Module]
) -> dict[str, dict[str, float]]:
    """``{term: {block: ||d term / d block||_2}}`` for scalar ``terms`` that share one graph.

    Args:
        terms: scalar loss terms (weighted as they enter the objective), computed with gradients enabled.
        blocks: ``{name: module}``; parameters that a term does not reach (or that do not require gradients) count
            as zero.

    Returns:
        plain floats; the graph is kept until the last term (freed after it).
    """
    params = {name: [p for p in m.parameters() if p.requires_grad] for name, m in blocks.items()}
    flat = [p for ps in params.values() for p in ps]
    if not flat:
        raise ValueError("term_block_gradient_norms: the blocks have no parameters that require gradients.")
    norms: dict[str, dict[str, float]] = {}
    names = list(terms)
    for i, term in enumerate(names):
        value = terms[term]
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError(f"term_block_gradient_norms: term {term!r} must be a scalar tensor.")
        if not value.requires_grad:
            norms[term] = {name: 0.0 for name in params}
            continue
        grads = torch.autograd.grad(value.reshape(()), flat, retain_graph=i + 1 < len(names), allow_unused=True)
        it = iter(grads)
        norms[term] = {}
        for name, ps in params.items():
            squares = [g.detach().double().pow(2).sum() for g in (next(it) for _ in ps) if g is not None]
            norms[term][name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms


def gradient_shares(norms: Mapping[str, Mapping[str, float]], over: str = "blocks") -> dict[str, dict[str, float]]:
    """Normalise :py:func:`term_block_gradient_norms`.

    Args:
        norms: ``{term: {block: norm}}``.
        over: ``"blocks"``: ``{term: {block: share}}``, each term's norms divided by their sum over the blocks
            (where the term's gradient lands); ``"terms"``: ``{block: {term: share}}``, each block's norms divided by
            their sum over the terms (which term drives the block). A zero sum gives NaN shares.
    """
    if over == "blocks":
        out = {}
        for term, per_block in norms.items():
            total = sum(per_block.values())
            out[term] = {b: (v / total if total > 0 else float("nan")) for b, v in per_block.items()}
        return out
    if over == "terms":
        blocks = list(dict.fromkeys(b for per_block in norms.values() for b in per_block))
        out = {}
        for b in blocks:
            total = sum(norms[t].get(b, 0.0) for t in norms)
            out[b] = {t: (norms[t].get(b, 0.0) / total if total > 0 else float("nan")) for t in norms}
        return out
    raise ValueError(f"gradient_shares: over must be 'blocks' or 'terms', got {over!r}.")
