# SPDX-License-Identifier: Apache-2.0
"""Benchmark: seconds per COVER pretraining step, and the share of it spent in the head.

One step = ``CoverNet(PyramidUNet, CoverHead)`` forward on two views (batch ``--batch``, one channel, ``--size``
voxels per axis), ``CoverLoss`` against a synthetic ground truth, and the backward pass (no optimiser step).
In the same process and interleaved round by round, it also times the backbone alone (the same batched
forward of both views, a trivial loss over every pyramid level, backward). The head's share is
``1 - backbone / step``: the projections, the mixtures of vectors, VPA's warps and upsamplings and the loss.

``--reference`` also times, interleaved round by round in the same process, the *reference step*: the same network
(same weights, same views) with every mixture of vectors computed by the straightforward per-offset loop
(``bench_mov.loop_mov``: one padded-key slice per offset, concatenated logits, softmax) and every projection applied
after the warp of the key's backbone features (ours warps the projection instead), in float32, and both steps
then take an Adam step. It prints the ratio reference / ours and the relative difference of the first losses (ours
may run with ``--amp bf16`` and ``--channels-last``; the reference never does). The routes to a faster CPU step are
measured by running it with and without those flags.

``--memory`` (CPU) also measures the peak resident memory of one step of ours and, with ``--reference``, of the
reference step, each in a fresh subprocess after one warm-up step (``MALLOC_MMAP_THRESHOLD_=65536`` so freed buffers
go back to the OS): the process's peak RSS during the step (weights, Adam state and everything the step allocates)
and the part above the RSS before it, and the ratio ours / reference of the peak.

``--keep-freed-memory`` calls ``monai_cover.bundle.keep_freed_memory`` first (as the bundles do on CPU), for ours and
the reference alike: without it, glibc hands large freed blocks back to the OS and every step faults them back in,
which costs the reference's large logits buffers more than ours.

``--backend`` sets the mixture-of-vectors backend of the whole step (through ``MONAI_COVER_MOV_BACKEND``; ``auto``:
Triton on CUDA when triton is installed, the PyTorch op elsewhere); ``--json PATH`` also writes the figures to a file.

Usage::

    python benchmarks/bench_step.py                          # 64^3, CPU, float32, reference network
    python benchmarks/bench_step.py --size 32 --steps 2      # quicker
    python benchmarks/bench_step.py --device cuda --amp bf16
    python benchmarks/bench_step.py --device cuda --amp bf16 --size 96 --backend torch   # without the Triton kernels
    python benchmarks/bench_step.py --reference              # 64^3 on CPU: ours vs the per-offset loop, with Adam
    python benchmarks/bench_step.py --reference --amp bf16 --channels-last
    python benchmarks/bench_step.py --reference --amp bf16 --memory   # also the peak memory of both steps
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_mov import _status_kib  # noqa: E402  (one reader of /proc/self/status for both benchmarks)
from monai_cover.bundle import keep_freed_memory  # noqa: E402
from monai_cover.ddf import overlap_mask, warp  # noqa: E402
from monai_cover.losses import CoverLoss  # noqa: E402
from monai_cover.networks.blocks import select_backend  # noqa: E402
from monai_cover.networks.blocks.mixture_of_vectors import BACKEND_ENV  # noqa: E402
from monai_cover.networks.nets import CoverNet, PyramidUNet  # noqa: E402


def smooth(shape: tuple[int, ...], dims: int, coarse: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth random field: ``coarse``-voxel noise, linearly upsampled to ``shape[2:]``."""
    noise = torch.rand(*shape[:2], *([coarse] * dims), generator=generator)
    mode = "bilinear" if dims == 2 else "trilinear"
    return F.interpolate(noise, size=shape[2:], mode=mode, align_corners=True)


def make_pair(batch: int, size: int, dims: int, amplitude: float, device: torch.device):
    g = torch.Generator().manual_seed(0)
    spatial = (size,) * dims
    view_a = smooth((batch, 1, *spatial), dims, 8, g)
    ddf = amplitude * (2 * smooth((batch, dims, *spatial), dims, 4, g) - 1)
    view_b = warp(view_a, ddf)
    target = {"ddf": ddf.to(device), "overlap": overlap_mask(ddf).to(device)}
    return view_a.to(device), view_b.to(device), target


class LoopMixture(torch.nn.Module):
    """A ``MixtureOfVectors`` computed by the per-offset loop of ``bench_mov.py`` (the reference head)."""

    def __init__(self, radius: int, num_heads: int) -> None:
        super().__init__()
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_mov.py")
        spec = importlib.util.spec_from_file_location("bench_mov", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.loop, self.radius, self.num_heads = module.loop_mov, radius, num_heads

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return self.loop(query.float(), key.float(), self.radius, self.num_heads)


class WarpThenProject(torch.nn.Module):
    """A ``CoverProjection`` whose ``pair`` warps the key's backbone features and then projects them, as the
    reference head does (ours projects first and warps the projection: the same values, fewer channels warped)."""

    def __init__(self, projection: torch.nn.Module) -> None:
        super().__init__()
        self.projection = projection

    def pair(self, query: torch.Tensor, key: torch.Tensor, key_ddf: torch.Tensor | None = None):
        if key_ddf is not None:
            key = warp(key, key_ddf)
        batch = query.shape[0]
        out = self.projection(torch.cat([query, key.to(query.dtype)], dim=0))
        return out[:batch], out[batch:]


def reference_network(net: CoverNet) -> CoverNet:
    """A copy of ``net`` (same weights) with the reference head: every mixture of vectors is the per-offset loop
    and every projection warps before it projects."""
    ref = copy.deepcopy(net)
    ref.head.mixtures = torch.nn.ModuleList(LoopMixture(m.radius, m.num_heads) for m in net.head.mixtures)
    ref.head.projections = torch.nn.ModuleList(WarpThenProject(p) for p in ref.head.projections)
    return ref


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_memory(variant: str) -> dict:
    """Run one step of ``variant`` in a fresh subprocess with this run's arguments; its peak and pre-step RSS."""
    argv = [a for a in sys.argv[1:] if a != "--memory"]
    if "--json" in argv:
        i = argv.index("--json")
        del argv[i : i + 2]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--memory-child", variant],
                          env=env, capture_output=True, text=True, check=False, encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"bench_step: the {variant} memory subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="voxels per axis of each view (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast dtype (default none)")
    parser.add_argument("--batch", type=int, default=1, help="pairs per step (default 1)")
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=3)
    parser.add_argument("--channels", default="32,64,128,256,512", help="PyramidUNet encoder widths, finest first")
    parser.add_argument("--radius", type=int, default=2, help="mixture-of-vectors radius (default 2)")
    parser.add_argument("--steps", type=int, default=3, help="timed rounds (median reported; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads on CPU (0: leave as is)")
    parser.add_argument(
        "--backend", choices=("auto", "torch", "triton"), default="auto", help="mixture-of-vectors backend (auto)"
    )
    parser.add_argument("--reference", action="store_true",
                        help="also time the per-offset-loop reference step (fp32), interleaved; both take Adam steps")
    parser.add_argument("--channels-last", action="store_true", help="channels_last(_3d) memory format for ours")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile (inductor) the backbone of ours; the warm-up rounds absorb compilation")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="CPU: keep freed memory in the process (monai_cover.bundle.keep_freed_memory), as the "
                             "bundles do")
    parser.add_argument("--memory", action="store_true",
                        help="CPU: also the peak resident memory of one step of ours (and of the reference)")
    parser.add_argument("--memory-child", choices=("ours", "reference"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.memory and torch.device(args.device).type != "cpu":
        parser.error("--memory measures resident memory on CPU; on CUDA the peak GPU memory is printed anyway.")
    if args.backend != "auto":
        os.environ[BACKEND_ENV] = args.backend  # read by every MixtureOfVectors call of the step

    device = torch.device(args.device)
    backend = select_backend("auto", device)
    kept = keep_freed_memory(device) if args.keep_freed_memory else False
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dims = args.spatial_dims
    channels = tuple(int(c) for c in args.channels.split(","))
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    torch.manual_seed(0)
    net = CoverNet(PyramidUNet(dims, 1, channels), radius=args.radius).to(device).train()
    loss_fn = CoverLoss.paper()  # the reference objective, as the reference step computes it
    view_a, view_b, target = make_pair(args.batch, args.size, dims, amplitude=0.1 * args.size, device=device)
    ref = reference_network(net) if args.reference and args.memory_child != "ours" else None
    if args.memory_child == "reference":
        net = None  # the child measures the reference network alone
    ref_views = (view_a, view_b)
    if args.channels_last and net is not None:
        fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
        net = net.to(memory_format=fmt)
        view_a, view_b = view_a.contiguous(memory_format=fmt), view_b.contiguous(memory_format=fmt)
    if args.compile and net is not None:
        net.backbone = torch.compile(net.backbone)
    both = torch.cat([view_a, view_b])
    optimizers = {}
    if args.reference:
        optimizers = {name: torch.optim.Adam(network.parameters(), lr=1e-4)
                      for name, network in (("ours", net), ("reference", ref)) if network is not None}
    losses: dict[str, list[float]] = {"ours": [], "reference": []}

    def cover_step(name: str, network: CoverNet, views: tuple, context) -> float:
        """One timed step of ``network`` (forward under ``context``, loss, backward, the Adam step if any); the loss
        is kept in ``losses[name]``."""
        network.zero_grad(set_to_none=True)
        sync(device)
        start = time.perf_counter()
        with context():
            loss = loss_fn(network(*views), target)
        loss.backward()
        if optimizers:
            optimizers[name].step()
        sync(device)
        losses[name].append(float(loss.detach()))
        return time.perf_counter() - start

    def full_step() -> float:
        return cover_step("ours", net, (view_a, view_b), autocast)

    def reference_step() -> float:  # always float32
        return cover_step("reference", ref, ref_views, nullcontext)

    def backbone_step() -> float:
        net.zero_grad(set_to_none=True)
        sync(device)
        start = time.perf_counter()
        with autocast():
            pyramid = net.backbone(both)
            loss = sum(f.float().mean() for f in pyramid)
        loss.backward()
        sync(device)
        return time.perf_counter() - start

    if args.memory_child:
        step = full_step if args.memory_child == "ours" else reference_step
        step()  # warm-up: lazy initialisation and Adam's state are in the RSS before the measured step
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # reset VmHWM to the current RSS
        step()
        print(json.dumps({"peak_bytes": _status_kib("VmHWM") * 1024, "before_bytes": before * 1024}))
        return

    for _ in range(args.warmup):
        full_step()
        backbone_step()
        if args.reference:
            reference_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    full, backbone, reference = [], [], []
    for _ in range(args.steps):
        full.append(full_step())
        backbone.append(backbone_step())
        if args.reference:
            reference.append(reference_step())
    step_s, backbone_s = statistics.median(full), statistics.median(backbone)
    head_share = max(0.0, 1.0 - backbone_s / step_s)

    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(
        f"bench_step: {args.batch} x two {args.size}^{dims} views, PyramidUNet{channels} + "
        f"CoverHead(radius={args.radius}, "
        f"heads={net.head.num_heads}) + CoverLoss, {params:.2f} M parameters, device={device}, amp={args.amp}, "
        f"mov backend={backend}, keep_freed_memory={kept}, "
        f"threads={torch.get_num_threads()}, median of {args.steps}"
    )
    print(f"seconds per step (forward+backward): {step_s:.3f}   [all: {', '.join(f'{t:.3f}' for t in full)}]")
    print(f"backbone only (forward+backward):    {backbone_s:.3f}   [all: {', '.join(f'{t:.3f}' for t in backbone)}]")
    print(f"head + loss share of the step:       {100 * head_share:.1f} %  ({step_s - backbone_s:.3f} s)")
    ratio = loss_gap = None
    if args.reference:
        ratio = statistics.median(reference) / step_s
        first_ours, first_ref = losses["ours"][0], losses["reference"][0]  # same weights, same views
        loss_gap = abs(first_ours - first_ref) / max(abs(first_ref), 1e-12)
        print(f"reference step (per-offset loop, fp32): {statistics.median(reference):.3f}   "
              f"[all: {', '.join(f'{t:.3f}' for t in reference)}]")
        print(f"speed-up reference / ours:           {ratio:.2f}x   "
              f"(amp={args.amp}, channels_last={args.channels_last}, compile={args.compile})")
        print(f"first loss: ours {first_ours:.6f}, reference {first_ref:.6f}, relative difference {loss_gap:.2e}")
    memory = {}
    if args.memory:
        for variant in ("ours", "reference") if args.reference else ("ours",):
            memory[variant] = measure_memory(variant)
            m = memory[variant]
            print(f"peak resident memory, {variant} step: {m['peak_bytes'] / 2**30:.2f} GiB "
                  f"({(m['peak_bytes'] - m['before_bytes']) / 2**30:.2f} GiB above the RSS before the step)")
        if args.reference:
            memory["ratio"] = memory["ours"]["peak_bytes"] / memory["reference"]["peak_bytes"]
            print(f"peak memory ours / reference:       {memory['ratio']:.2f}x")
    peak = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        print(f"peak GPU memory: {peak / 2**30:.2f} GiB")
    if args.json:
        result = dict(
            size=args.size, spatial_dims=dims, batch=args.batch, device=str(device), amp=args.amp, backend=backend,
            radius=args.radius, parameters_m=params, step_s=step_s, backbone_s=backbone_s, head_share=head_share,
            steps=full, backbone_steps=backbone, peak_gpu_bytes=peak, channels_last=args.channels_last,
            compiled=args.compile, memory=memory or None, keep_freed_memory=kept,
            reference_steps=reference, reference_ratio=ratio, first_loss_relative_difference=loss_gap,
        )
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
