# SPDX-License-Identifier: Apache-2.0
"""Benchmark: the voxel InfoNCE loss (``voxel_nt_xent``) against the plain log-sum-exp form, in one process.

The loss of the voxel InfoNCE baseline and of COVER's hybrid is dominated by three ``N x N`` similarity matrices
(``N`` = sampled voxels of the whole batch; the 2D ``--medium`` track uses 8 x 512 = 4096). The library computes
it with a shared fixed shift and a hand-written backward (``_SharedShiftNTXent``); the plain form is the textbook
autograd one (``torch.logsumexp`` over ``[cross | self]`` per side). Both are timed forward + backward, round by round
interleaved, on the same random unit vectors; the script prints the median seconds, the plain/library ratio, and the
largest difference of the per-anchor values and of the gradients (they must agree to float rounding).

Usage::

    python benchmarks/bench_voxel_infonce.py --threads 2            # N = 1024, 4096, 8192; under a minute
    python benchmarks/bench_voxel_infonce.py --sizes 4096 --dim 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from monai_cover.losses.voxel_infonce import _plain_log_partitions, voxel_nt_xent  # noqa: E402


def plain_nt_xent(u: torch.Tensor, v: torch.Tensor, temperature: float) -> torch.Tensor:
    u, v = F.normalize(u, dim=1), F.normalize(v, dim=1)
    lse_u, lse_v = _plain_log_partitions(u, v, temperature, None)
    return 0.5 * (lse_u + lse_v) - (u * v).sum(dim=1) / temperature


def timed(fn, u: torch.Tensor, v: torch.Tensor, weights: torch.Tensor, temperature: float):
    u = u.detach().clone().requires_grad_(True)
    v = v.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    value = fn(u, v, temperature)
    (value * weights).sum().backward()
    return time.perf_counter() - start, value.detach(), u.grad, v.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192], help="anchors N")
    parser.add_argument("--dim", type=int, default=64, help="embedding width D (the 2D track's projection: 64)")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per form (median; default 5)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = []
    print(f"{'N':>6} {'plain s':>9} {'library s':>10} {'ratio':>6} {'max |value diff|':>17} {'max |grad diff|':>16}")
    for n in args.sizes:
        gen = torch.Generator().manual_seed(n)
        u, v = torch.randn(n, args.dim, generator=gen), torch.randn(n, args.dim, generator=gen)
        weights = torch.rand(n, generator=gen)  # unequal anchor weights: exercises every gradient path
        times: dict[str, list[float]] = {"plain": [], "library": []}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, fn in (("plain", plain_nt_xent), ("library", voxel_nt_xent)):
                seconds, value, grad_u, grad_v = timed(fn, u, v, weights, args.temperature)
                times[name].append(seconds)
                if name == "plain":
                    ref = (value, grad_u, grad_v)
                else:
                    value_diff = float((value - ref[0]).abs().max())
                    grad_diff = max(float((grad_u - ref[1]).abs().max()), float((grad_v - ref[2]).abs().max()))
        plain, library = statistics.median(times["plain"][1:]), statistics.median(times["library"][1:])
        results.append({"n": n, "dim": args.dim, "plain_s": plain, "library_s": library, "ratio": plain / library,
                        "max_value_diff": value_diff, "max_grad_diff": grad_diff})
        print(f"{n:>6} {plain:>9.3f} {library:>10.3f} {plain / library:>6.2f} {value_diff:>17.2e} {grad_diff:>16.2e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"threads": torch.get_num_threads(), "temperature": args.temperature, "results": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
