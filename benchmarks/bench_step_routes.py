# SPDX-License-Identifier: Apache-2.0
"""Benchmark: what each CPU speed route of the pretraining step is worth, measured in one process.

The step of ``bench_step.py`` (PyramidUNet + CoverHead + CoverLoss at ``--size``, forward and backward) is timed,
round by round interleaved, with every route on and with one route switched back to the plain form at a time:

- ``mov loop``: every mixture of vectors by the per-offset loop of ``bench_mov.py`` (the reference's head);
- ``warp one call``: 3D warps as one ``grid_sample`` call (PyTorch's CPU sampler then uses one thread per sample);
- ``warp then project``: each level's projection applied after warping the key's backbone features (the
  reference's order) instead of warping the projection;
- ``interpolate upsampling``: the backbone's decoder upsamples by ``F.interpolate`` instead of the separable
  passes of ``upsample_linear_2x`` (a route of the shared backbone: it speeds the reference step as well);
- ``torch cosine``: ``F.cosine_similarity`` in the consistency loss instead of ``channel_cosine``;
- ``fp32``: no bf16 autocast.

It prints the median seconds of each variant, the slowdown against "all routes on", and the relative difference of
each variant's first loss from that of "all routes on" (the routes change the speed, not the result: bf16 against
fp32 moves it by about 1e-4). ``--keep-freed-memory``
first applies ``monai_cover.bundle.keep_freed_memory`` (as the bundles do on CPU); it is a process-wide allocator
setting, so its own worth is measured by running the script with and without it.

Usage::

    python benchmarks/bench_step_routes.py --threads 2            # 64^3, about 2 minutes on 2 cores
    python benchmarks/bench_step_routes.py --threads 2 --keep-freed-memory
    python benchmarks/bench_step_routes.py --size 32 --steps 2    # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import monai_cover.ddf as ddf_module  # noqa: E402
import monai_cover.losses.cover as cover_module  # noqa: E402
import monai_cover.networks.nets.pyramid_unet as pyramid_module  # noqa: E402
from benchmarks.bench_step import LoopMixture, WarpThenProject, make_pair  # noqa: E402
from monai_cover.bundle import keep_freed_memory  # noqa: E402
from monai_cover.losses import CoverLoss  # noqa: E402
from monai_cover.networks.nets import CoverNet, PyramidUNet  # noqa: E402


@contextlib.contextmanager
def patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def one_call_grid_sample(image, grid, mode, padding_mode):
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def interpolate_resize(x, size):
    mode = "trilinear" if x.ndim == 5 else "bilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def torch_cosine(a, b, eps=1e-8):
    return F.cosine_similarity(a, b, dim=1, eps=eps).unsqueeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (median; default 5)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--keep-freed-memory", action="store_true", help="apply monai_cover.bundle.keep_freed_memory")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    kept = keep_freed_memory("cpu") if args.keep_freed_memory else False
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = CoverNet(PyramidUNet(3, 1, (32, 64, 128, 256, 512)), radius=2).train()
    loops = torch.nn.ModuleList(LoopMixture(m.radius, m.num_heads) for m in net.head.mixtures)
    warp_first = torch.nn.ModuleList(WarpThenProject(p) for p in net.head.projections)  # same weights
    loss_fn = CoverLoss.paper()
    view_a, view_b, target = make_pair(1, args.size, 3, amplitude=0.1 * args.size, device=torch.device("cpu"))

    losses: list[float] = []

    def step(bf16: bool = True) -> float:
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(view_a, view_b), target)
        loss.backward()
        losses.append(float(loss.detach()))  # no optimiser step: every call sees the same weights
        return time.perf_counter() - start

    def with_loop_mixtures() -> float:
        with patched(net.head, "mixtures", loops):
            return step()

    def with_one_call_warp() -> float:
        with patched(ddf_module, "_grid_sample", one_call_grid_sample):
            return step()

    def with_warp_then_project() -> float:
        with patched(net.head, "projections", warp_first):
            return step()

    def with_interpolate_upsampling() -> float:
        with patched(pyramid_module, "resize_linear", interpolate_resize):
            return step()

    def with_torch_cosine() -> float:
        with patched(cover_module, "channel_cosine", torch_cosine):
            return step()

    variants = {
        "all routes on": step, "mov loop": with_loop_mixtures, "warp one call": with_one_call_warp,
        "warp then project": with_warp_then_project, "interpolate upsampling": with_interpolate_upsampling,
        "torch cosine": with_torch_cosine,
        "fp32": lambda: step(bf16=False),
    }
    times = {name: [] for name in variants}
    first_loss = {}
    for rnd in range(args.steps + 1):
        for name, fn in variants.items():
            elapsed = fn()
            first_loss.setdefault(name, losses[-1])
            if rnd:
                times[name].append(elapsed)
    base = statistics.median(times["all routes on"])
    print(f"bench_step_routes: two {args.size}^3 views, threads={torch.get_num_threads()}, keep_freed_memory={kept}, "
          f"median of {args.steps}")
    rows = {}
    ref_loss = first_loss["all routes on"]
    for name, got in times.items():
        med = statistics.median(got)
        gap = abs(first_loss[name] - ref_loss) / max(abs(ref_loss), 1e-12)
        rows[name] = dict(seconds=med, slowdown=med / base, all=got, loss=first_loss[name],
                          loss_relative_difference=gap)
        print(f"{name:>22}: {med:.3f} s  ({med / base:.2f}x the step with every route; loss differs by {gap:.1e})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(size=args.size, threads=torch.get_num_threads(), keep_freed_memory=kept, routes=rows), f,
                      indent=1)


if __name__ == "__main__":
    main()
