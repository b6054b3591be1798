# SPDX-License-Identifier: Apache-2.0
"""Throughput of COVER pair generation and how often targets exceed the head's capture range.

    python benchmarks/bench_views.py [--pairs 10] [--draws 20] [--seed 0]

Prints, on CPU with one thread (``torch.set_num_threads(1)``, one worker):
- pairs per second of ``RandCoverPaird`` with default settings for 96^3 crops of a 144^3 volume (3D) and
  384^2 crops of a 576^2 image (2D), the reference's 1.5x margin;
- over ``--draws`` draws, the fraction of overlap voxels whose target ``|ddf_i|`` exceeds
  ``capture_range(2, 5) = 62`` voxels on some axis, with the default bound (``max_displacement=62``) and,
  in the same run, with the bound disabled (``max_displacement=None``, the reference behaviour), plus the
  mean overlap fraction and the median of ``max |ddf|``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from monai_cover.ddf import capture_range  # noqa: E402
from monai_cover.transforms import RandCoverPaird  # noqa: E402


def _volume(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A smooth-plus-noise test image (1, *shape) in about [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.linspace(0, 1, s) for s in shape], indexing="ij")
    smooth = sum(torch.sin((4.0 + i) * x) for i, x in enumerate(axes)) / (2 * len(shape)) + 0.5
    return (smooth + 0.05 * torch.rand(shape, generator=gen))[None].float()


def throughput(shape, crop, pairs: int, seed: int) -> float:
    data = {"image": _volume(shape, seed)}
    t = RandCoverPaird(spatial_size=crop).set_random_state(seed)
    t(data)  # warm-up
    start = time.perf_counter()
    for _ in range(pairs):
        t(data)
    return pairs / (time.perf_counter() - start)


def capture_stats(shape, crop, draws: int, seed: int, bound) -> tuple[float, float, float]:
    """(fraction of overlap voxels beyond reach, mean overlap fraction, median max |ddf|)."""
    reach = capture_range(2, 5)
    data = {"image": _volume(shape, seed)}
    t = RandCoverPaird(spatial_size=crop, appearance=False, max_displacement=bound).set_random_state(seed)
    beyond = total = 0.0
    overlaps, maxima = [], []
    for _ in range(draws):
        out = t(data)
        ddf, mask = out["ddf"].as_tensor(), out["overlap"].as_tensor()[0] > 0
        far = (ddf.abs() > reach).any(dim=0)
        beyond += float((far & mask).sum())
        total += float(mask.sum())
        overlaps.append(float(mask.float().mean()))
        maxima.append(float(ddf.abs().max()))
    return beyond / max(total, 1.0), float(np.mean(overlaps)), float(np.median(maxima))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10, help="timed pairs per setting")
    parser.add_argument("--draws", type=int, default=20, help="draws for the capture-range statistics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [("3D", (144, 144, 144), (96, 96, 96)), ("2D", (576, 576), (384, 384))]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")
    for name, shape, crop in cases:
        pps = throughput(shape, crop, args.pairs, args.seed)
        print(f"{name} {'x'.join(map(str, crop))} crops of {'x'.join(map(str, shape))}: {pps:.2f} pairs/s")
    print(f"capture range capture_range(2, 5) = {capture_range(2, 5)} voxels; {args.draws} draws each")
    for name, shape, crop in cases:
        for label, bound in (("default bound 62", capture_range(2, 5)), ("bound disabled", None)):
            frac, overlap, med = capture_stats(shape, crop, args.draws, args.seed, bound)
            print(
                f"{name} {label:>16}: overlap voxels beyond reach {100 * frac:6.2f} %, "
                f"mean overlap {100 * overlap:5.1f} %, median max|ddf| {med:6.1f} vox"
            )


if __name__ == "__main__":
    main()
