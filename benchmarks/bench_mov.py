# SPDX-License-Identifier: Apache-2.0
"""Benchmark: ``monai_cover`` MixtureOfVectors against the straightforward per-offset loop.

The baseline is written here from the formula, the way the COVER authors wrote it: zero-pad the key, slice it once
per offset, product-sum over the head channels, set out-of-image neighbours to -1000 (a one-argument ``where``, i.e.
a ``nonzero``), ``cat`` the logits, softmax, multiply by the offset vectors and sum, all through autograd.

For every 3D shape (radius 2) it measures, in one process with baseline and candidate interleaved round by round,
the median time of the forward (under ``no_grad``) and of forward + backward (``(out * g).sum().backward()`` with
``query`` and ``key`` as leaves). The transient peak memory of one call is measured in a fresh subprocess per
(variant, shape, mode): on CPU with ``MALLOC_MMAP_THRESHOLD_=65536`` (freed buffers go back to the OS) as
``VmHWM - VmRSS`` after resetting ``VmHWM`` through ``/proc/self/clear_refs``; on CUDA as
``max_memory_allocated - memory_allocated`` around the call.

Targets (project issue 12, raised from issue 3's 2x and 0.25x): at (2, 32, 32^3) with 4 heads and at
(1, 8, 64^3) with 1 head, forward + backward at least 5x faster and its transient peak at most 0.1x that of the
loop. With no arguments it runs in about 2 minutes on a quiet 2-core CPU (1 min 36 s measured on 2026-12-01).

``--backend`` picks which of the library's backends is "ours" (``auto``: Triton on CUDA when triton is installed,
the PyTorch op elsewhere; see ``monai_cover.networks.blocks.select_backend``); the header says which one ran.
``--json PATH`` also writes every figure to a JSON file (used by ``benchmarks/gpu_check.py``).

Usage::

    python benchmarks/bench_mov.py                      # CPU, the three issue shapes
    python benchmarks/bench_mov.py --quick              # CI-size smoke run
    python benchmarks/bench_mov.py --device cuda --amp bf16
    python benchmarks/bench_mov.py --device cuda --backend torch --no-memory   # the PyTorch op on the GPU
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from monai_cover.networks.blocks import MixtureOfVectors, select_backend  # noqa: E402

SHAPES = [((2, 32, 32, 32, 32), 4), ((2, 32, 16, 16, 16), 4), ((1, 8, 64, 64, 64), 1)]
QUICK_SHAPES = [((1, 16, 12, 12, 12), 2), ((1, 8, 16, 16, 16), 1)]
TARGET_SHAPES = {((2, 32, 32, 32, 32), 4), ((1, 8, 64, 64, 64), 1)}
SPEED_TARGET, MEMORY_TARGET = 5.0, 0.1
RADIUS = 2


def loop_mov(query: torch.Tensor, key: torch.Tensor, radius: int = 2, num_heads: int = 1) -> torch.Tensor:
    """Straightforward mixture of vectors: one padded-key slice per offset, -1000 fill, cat, softmax, sum."""
    b, c, *spatial = query.shape
    dims, head_dim = len(spatial), c // num_heads
    q = query.reshape(b, head_dim, num_heads, *spatial) * head_dim**-0.5
    k_pad = F.pad(key.reshape(b, head_dim, num_heads, *spatial), [radius] * (2 * dims))
    inside = F.pad(torch.ones(spatial, device=query.device), [radius] * (2 * dims))
    offsets = list(itertools.product(range(-radius, radius + 1), repeat=dims))
    logits = []
    for offset in offsets:
        window = tuple(slice(radius + o, radius + o + s) for o, s in zip(offset, spatial))
        logit = (q * k_pad[(slice(None),) * 3 + window]).sum(1)
        outside = torch.where(inside[window] == 0)
        logit[(slice(None), slice(None)) + outside] = -1000.0
        logits.append(logit.unsqueeze(2))
    attn = torch.softmax(torch.cat(logits, 2), dim=2)  # (B, heads, K, *S)
    vectors = torch.tensor(offsets, dtype=attn.dtype, device=attn.device)
    vectors = vectors.view(1, 1, len(offsets), dims, *([1] * dims))
    return (attn.unsqueeze(3) * vectors).sum(2).mean(1)


def make_variant(name: str, num_heads: int, backend: str = "auto"):
    if name == "loop":
        return lambda q, k: loop_mov(q, k, RADIUS, num_heads)
    return MixtureOfVectors(spatial_dims=3, radius=RADIUS, num_heads=num_heads, backend=backend)


def make_inputs(shape, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(shape, generator=gen).to(device).requires_grad_(True)
    k = torch.randn(shape, generator=gen).to(device).requires_grad_(True)
    g = torch.randn(shape[0], len(shape) - 2, *shape[2:], generator=gen).to(device)
    return q, k, g


def autocast_ctx(device: str, amp: str):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


def run_once(fn, q, k, g, mode, device, amp):
    """One call: ``fwd`` under no_grad, or ``fwdbwd`` = forward + backward of ``(out * g).sum()``."""
    q.grad = k.grad = None
    if mode == "fwd":
        with torch.no_grad(), autocast_ctx(device, amp):
            out = fn(q, k)
    else:
        with autocast_ctx(device, amp):
            out = fn(q, k)
        (out.float() * g).sum().backward()
    return out


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine from /proc/stat (0, 0 where unavailable)."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _self_ticks() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * os.sysconf("SC_CLK_TCK")


def timed_call(fn, q, k, g, mode, args) -> tuple[float, float]:
    """Seconds of one call and the share of the machine's CPU that *other* processes used meanwhile."""
    sync(args.device)
    busy0, total0 = _cpu_ticks()
    self0 = _self_ticks()
    t0 = time.perf_counter()
    run_once(fn, q, k, g, mode, args.device, args.amp)
    sync(args.device)
    elapsed = time.perf_counter() - t0
    busy1, total1 = _cpu_ticks()
    other = (busy1 - busy0) - (_self_ticks() - self0)
    return elapsed, max(0.0, other / (total1 - total0)) if total1 > total0 else 0.0


def time_interleaved(shape, num_heads, args):
    """Median seconds per (variant, mode), with the variants and modes interleaved in every round.

    Calls during which other processes used more than ``--busy`` of the CPUs are left out of the median
    ("clean median") when at least 3 clean calls remain; the number of clean calls is reported.
    """
    q, k, g = make_inputs(shape, args.device)
    fns = {name: make_variant(name, num_heads, args.backend) for name in ("loop", "ours")}
    samples = {(name, mode): [] for name in fns for mode in ("fwd", "fwdbwd")}
    for rnd in range(args.warmup + args.rounds):
        for (name, mode), got in samples.items():
            elapsed, other = timed_call(fns[name], q, k, g, mode, args)
            if rnd >= args.warmup:
                got.append((elapsed, other))
    times, clean_counts = {}, {}
    for key, got in samples.items():
        clean = [t for t, other in got if other <= args.busy]
        times[key] = statistics.median(clean if len(clean) >= 3 else [t for t, _ in got])
        clean_counts[key] = len(clean)
    # agreement of the two implementations on these inputs
    diffs = {}
    outs, grads = {}, {}
    for name, fn in fns.items():
        outs[name] = run_once(fn, q, k, g, "fwdbwd", args.device, args.amp).detach().float()
        grads[name] = (q.grad.clone(), k.grad.clone())
    diffs["out"] = (outs["loop"] - outs["ours"]).abs().max().item()
    diffs["dq"] = (grads["loop"][0] - grads["ours"][0]).abs().max().item()
    diffs["dk"] = (grads["loop"][1] - grads["ours"][1]).abs().max().item()
    return times, clean_counts, diffs


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_peak(spec: dict) -> float:
    """Transient peak bytes of one call (run inside the subprocess)."""
    torch.set_num_threads(spec["threads"])
    device, amp, mode = spec["device"], spec["amp"], spec["mode"]
    shape, num_heads = tuple(spec["shape"]), spec["heads"]
    fn = make_variant(spec["variant"], num_heads, spec.get("backend", "auto"))
    q, k, g = make_inputs(shape, device)
    run_once(fn, q, k, g, mode, device, amp)  # warm-up: lazy initialisation is not part of the peak
    q.grad = k.grad = None
    gc.collect()
    if device == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(fn, q, k, g, mode, device, amp)
        sync(device)
        return float(torch.cuda.max_memory_allocated() - base)
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
        f.write("5")  # reset VmHWM to the current RSS
    run_once(fn, q, k, g, mode, device, amp)
    return float(_status_kib("VmHWM") - base) * 1024


def measure_peak(variant, shape, num_heads, mode, args) -> float:
    spec = dict(
        variant=variant, shape=list(shape), heads=num_heads, mode=mode, device=args.device, amp=args.amp,
        threads=torch.get_num_threads(), backend=args.backend,
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        env=env, capture_output=True, text=True, check=False, encoding="utf-8", errors="replace",
    )
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory child failed for {spec}:\n{proc.stderr}")
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "triton"], help="backend of 'ours' (default auto)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7, quick 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--busy", type=float, default=0.10, help="leave out calls while others used more than this CPU share"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(child_peak(json.loads(args.child)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    shapes = QUICK_SHAPES if args.quick else SHAPES
    backend = select_backend(args.backend, args.device)
    print(
        f"bench_mov: device={args.device} amp={args.amp} backend={backend} threads={torch.get_num_threads()} "
        f"radius={RADIUS} "
        f"rounds={args.rounds} (loop and ours interleaved; clean median: calls with > {args.busy:.0%} CPU used by "
        f"others left out) torch={torch.__version__}"
    )
    header = (
        f"{'shape (B,C,spatial)':<22}{'heads':>6}{'mode':>8}{'loop ms':>10}{'ours ms':>10}{'speedup':>9}"
        f"{'loop MB':>10}{'ours MB':>10}{'mem ratio':>10}{'clean':>8}"
    )
    print(header)
    print("-" * len(header))
    verdicts, rows = [], []
    for shape, num_heads in shapes:
        times, clean, diffs = time_interleaved(shape, num_heads, args)
        for mode in ("fwd", "fwdbwd"):
            t_loop, t_ours = times[("loop", mode)], times[("ours", mode)]
            if args.no_memory:
                m_loop = m_ours = float("nan")
            else:
                m_loop = measure_peak("loop", shape, num_heads, mode, args)
                m_ours = measure_peak("ours", shape, num_heads, mode, args)
            speed, ratio = t_loop / t_ours, m_ours / m_loop if m_loop > 0 else float("nan")
            print(
                f"{str(shape):<22}{num_heads:>6}{mode:>8}{t_loop * 1e3:>10.1f}{t_ours * 1e3:>10.1f}{speed:>8.2f}x"
                f"{m_loop / 2**20:>10.1f}{m_ours / 2**20:>10.1f}{ratio:>10.3f}"
                f"{clean[('loop', mode)]:>4}/{clean[('ours', mode)]}",
                flush=True,
            )
            if mode == "fwdbwd" and (shape, num_heads) in TARGET_SHAPES:
                verdicts.append((shape, num_heads, speed, ratio))
            rows.append(
                dict(
                    shape=list(shape), heads=num_heads, mode=mode, loop_s=t_loop, ours_s=t_ours, speedup=speed,
                    loop_peak_bytes=m_loop, ours_peak_bytes=m_ours, memory_ratio=ratio, max_abs_diff=diffs,
                )
            )
        print(f"{'':<22}max |loop - ours|: out {diffs['out']:.2e}  dq {diffs['dq']:.2e}  dk {diffs['dk']:.2e}")
    if verdicts:
        print(f"\ntargets (forward+backward): speedup >= {SPEED_TARGET}x and peak-memory ratio <= {MEMORY_TARGET}")
        for shape, num_heads, speed, ratio in verdicts:
            ok_speed, ok_mem = speed >= SPEED_TARGET, ratio <= MEMORY_TARGET
            print(
                f"  {shape} heads {num_heads}: speed {speed:.2f}x {'MET' if ok_speed else 'NOT MET'}, "
                f"memory {ratio:.3f} {'MET' if ok_mem else ('NOT MEASURED' if ratio != ratio else 'NOT MET')}"
            )
    if args.json:
        meta = dict(device=args.device, amp=args.amp, backend=backend, radius=RADIUS, torch=torch.__version__)
        if args.device == "cuda":
            meta["gpu"] = torch.cuda.get_device_name()
        with open(args.json, "w", encoding="utf-8") as f:  # NaN (memory not measured) is written as JSON's NaN
            json.dump(dict(meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
