#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Peak memory of one COVER pretraining step per crop size, against the bundle's estimate.

One step = the pretraining bundle's network (``CoverNet`` over ``BasicUNet(features)`` through ``FeaturePyramid``,
head levels matched to the crop), both views of ``--batch`` pairs, ``CoverLoss()``, backward. Each size runs in its
own process: on CPU the peak resident memory over the process's baseline (after imports and the network), on CUDA
``torch.cuda.max_memory_allocated``. It prints the measured memory per pair next to
:func:`monai_cover.bundle.device.estimate_pair_bytes` (the bundle's GPU batch sizing) and their ratio::

    python benchmarks/bench_memory.py                       # CPU, float32, 32/48/64^3 (about a minute)
    python benchmarks/bench_memory.py --device cuda --amp --sizes 64 96 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(size: int, batch: int, device: str, amp: bool, features: list[int]) -> dict:
    import resource

    import torch
    from monai.networks.nets import BasicUNet

    from monai_cover.ddf import overlap_mask
    from monai_cover.losses import CoverLoss
    from monai_cover.networks import CoverNet, FeaturePyramid, levels_for_size

    torch.manual_seed(0)
    dev = torch.device(device)
    patch = (size,) * 3
    unet = BasicUNet(spatial_dims=3, in_channels=1, out_channels=1, features=tuple(features))
    net = CoverNet(FeaturePyramid(unet), levels=levels_for_size(patch, len(features) - 1)).to(dev)
    loss = CoverLoss()
    a, b = torch.rand(batch, 1, *patch, device=dev), torch.rand(batch, 1, *patch, device=dev)
    ddf = 3 * torch.randn(batch, 3, *patch, device=dev)
    target = {"ddf": ddf, "overlap": overlap_mask(ddf)}
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        out = net(a, b)
        value = loss(out, target)
    value.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"size": size, "batch": batch, "bytes": int(peak - base), "loss": float(value)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--features", type=int, nargs=6, default=[32, 32, 64, 128, 256, 32])
    p.add_argument("--json", default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch, args.device, args.amp, args.features)))
        return 0
    sys.path.insert(0, ROOT)
    from monai_cover.bundle.device import estimate_pair_bytes

    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    print(f"device {args.device}, amp {args.amp}, batch {args.batch} pair(s), BasicUNet{tuple(args.features)}")
    print(f"{'crop':>6} {'measured GB/pair':>17} {'estimate GB/pair':>17} {'estimate/measured':>18}")
    for size in args.sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(size), "--batch", str(args.batch),
               "--device", args.device, "--features", *map(str, args.features)] + (["--amp"] if args.amp else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace")
        if proc.returncode != 0:
            print(f"{size:>5}^3 failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        measured = r["bytes"] / args.batch
        estimate = estimate_pair_bytes((size,) * 3, args.features, amp=args.amp)
        rows.append({**r, "per_pair_bytes": measured, "estimate_bytes": estimate, "ratio": estimate / measured})
        print(f"{size:>5}^3 {measured / 1e9:>17.2f} {estimate / 1e9:>17.2f} {estimate / measured:>18.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": args.device, "amp": args.amp, "features": args.features, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
