# SPDX-License-Identifier: Apache-2.0
"""GPU run book: every check of the CUDA path in one command, within a time budget (default 10 minutes).

Run it from the repository root on a CUDA machine, after ``pip install -e ".[test,gpu]"`` (CUDA build of torch)::

    python benchmarks/gpu_check.py                  # all checks, summary at the end, exit 1 if one failed
    python benchmarks/gpu_check.py --dry-run        # print the commands only (works without a GPU)
    python benchmarks/gpu_check.py --only tests,bench_mov --out runs/gpu_check

Checks, in this order (each one a subprocess with its own time limit, cut to what is left of ``--budget``):

``env``
    CUDA present, GPU name and count, torch and triton versions, and which mixture-of-vectors backend
    ``backend="auto"`` picks on CUDA (must be ``triton``: install ``monai_cover[gpu]``).
``tests``
    ``pytest -k cuda tests``: the CUDA tests (``unittest.skipUnless(torch.cuda.is_available(), "needs CUDA")``:
    the Triton kernels against the PyTorch op in fp32 and bf16, forward and backward; the PyTorch op on CUDA; the
    paired views generated on CUDA). Fails on a failure, an error, no test selected, or *any* skipped test.
``bench_mov``
    ``benchmarks/bench_mov.py --device cuda`` (fp32): the default backend (Triton) against the per-offset loop, time
    and peak GPU memory at the issue shapes; fails if the backend is not Triton or the two disagree by > 1e-3.
``bench_step``
    ``benchmarks/bench_step.py --device cuda --amp bf16 --size 96``: one pretraining step (PyramidUNet + head + loss,
    forward + backward), seconds and peak GPU memory.
``bundle``
    The ``cover_pretrain_3d`` bundle (``ConfigWorkflow`` on the embedded demo volumes) for ``--iterations`` (200)
    iterations of 96^3 patches with AMP (bf16): iterations/s (after 10 warm-up iterations), peak GPU memory
    (``torch.cuda.max_memory_allocated``), first/last loss (must be finite), mixture-of-vectors calls through Triton.
``ddp``
    Only with 2 or more GPUs: ``torchrun --standalone --nproc_per_node=2`` with ``multi_gpu_train.json`` (NCCL), 2
    epochs of 96^3 patches (with a validation round); must exit 0 and leave one checkpoint. Skipped on one GPU.
``bench_mov_torch``, ``bench_step_torch``
    If time is left: the same two benchmarks with ``--backend torch`` (the PyTorch op on the GPU), for the
    Triton-over-PyTorch ratios in the summary.

Everything a check writes (logs, JSON results, the bundle's output folder) goes to ``--out`` (default a new folder
under ``runs/gpu_check``). The summary lists each check as PASS/FAIL/SKIP with its seconds and key figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # monai_cover from this checkout, as the other benchmarks do
PRETRAIN = REPO / "bundles" / "cover_pretrain_3d"
CHECKS = ("env", "tests", "bench_mov", "bench_step", "bundle", "ddp", "bench_mov_torch", "bench_step_torch")
#: checks run only when at least this many seconds of the budget are left (the rest get what is left)
EXTRA_MIN_S = 60
#: largest |loop - ours| accepted in bench_mov (fp32; both sides accumulate in fp32)
MOV_TOLERANCE = 1e-3


class Check:
    """The outcome of one check."""

    def __init__(self, name: str) -> None:
        self.name, self.status, self.seconds, self.figures, self.notes = name, "SKIP", 0.0, {}, []

    def fail(self, note: str) -> None:
        self.status = "FAIL"
        self.notes.append(note)


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[int, float, str]:
    """Run ``cmd`` in the repository root, output to ``log``; (exit status or 124 on timeout, seconds, tail)."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, env=env or child_env(), stdout=out, stderr=subprocess.STDOUT, timeout=max(1, timeout)
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = 124
    seconds = time.perf_counter() - start
    tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
    return code, seconds, tail


def parse_junit(path: Path) -> dict:
    """Counts and skip reasons of a pytest ``--junitxml`` file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    skips = []
    for case in root.iter("testcase"):
        for skipped in case.findall("skipped"):
            skips.append(f"{case.get('classname')}.{case.get('name')}: {skipped.get('message', '')}")
    counts["skip_reasons"] = skips
    return counts


def fmt_bytes(n) -> str:
    return "n/a" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{n / 2**30:.2f} GiB"


# ---------------------------------------------------------------- the commands


def commands(name: str, args, out: Path) -> list[str]:
    """The command line of check ``name`` (``[]`` for ``env``, which runs in this process)."""
    py = sys.executable
    if name == "tests":
        return [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda", "tests"] + [
            "--junitxml",
            str(out / "tests.xml"),
        ]
    if name in ("bench_mov", "bench_mov_torch"):
        backend = "torch" if name.endswith("_torch") else "auto"
        cmd = [py, "benchmarks/bench_mov.py", "--device", "cuda", "--backend", backend, "--rounds", str(args.rounds)]
        return cmd + ["--json", str(out / f"{name}.json")] + (["--no-memory"] if backend == "torch" else [])
    if name in ("bench_step", "bench_step_torch"):
        backend = "torch" if name.endswith("_torch") else "auto"
        cmd = [py, "benchmarks/bench_step.py", "--device", "cuda", "--amp", "bf16", "--size", str(args.size)]
        return cmd + ["--steps", "5", "--warmup", "2", "--backend", backend, "--json", str(out / f"{name}.json")]
    if name == "bundle":
        cmd = [py, str(Path(__file__).resolve()), "--bundle-child", str(out / "bundle_run"), "--size", str(args.size)]
        return cmd + ["--iterations", str(args.iterations), "--child-json", str(out / "bundle.json")]
    if name == "ddp":
        configs = str([str(PRETRAIN / "configs" / "train.json"), str(PRETRAIN / "configs" / "multi_gpu_train.json")])
        cmd = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run"]
        cmd += ["--config_file", configs, "--bundle_root", str(PRETRAIN), "--output_dir", str(out / "ddp_run")]
        return cmd + ["--epochs", "2", "--patch_size", f"[{args.size},{args.size},{args.size}]"]
    return []


# ---------------------------------------------------------------- the checks


def check_env(c: Check, args, out: Path) -> None:
    import torch

    c.figures["torch"] = torch.__version__
    if not torch.cuda.is_available():
        c.fail("CUDA is not available (torch.cuda.is_available() is False)")
        return
    from monai_cover.networks.blocks import select_backend
    from monai_cover.networks.blocks.mixture_of_vectors import BACKEND_ENV, triton_available

    c.figures["gpus"] = torch.cuda.device_count()
    c.figures["gpu"] = torch.cuda.get_device_name(0)
    c.figures["cuda"] = torch.version.cuda
    if triton_available():
        import triton

        c.figures["triton"] = triton.__version__
    else:
        c.fail("triton is not importable: pip install -e '.[gpu]'")
    if os.environ.get(BACKEND_ENV):
        c.fail(f"{BACKEND_ENV}={os.environ[BACKEND_ENV]!r} is set: unset it so the checks see the default backend")
    c.figures["auto backend on cuda"] = backend = select_backend("auto", "cuda")
    if backend != "triton" and c.status != "FAIL":
        c.fail(f"backend='auto' picks {backend!r} on CUDA")
    if c.status != "FAIL":
        c.status = "PASS"


def check_tests(c: Check, args, out: Path, timeout: float) -> None:
    xml = out / "tests.xml"
    code, c.seconds, tail = run(commands("tests", args, out), out / "tests.log", timeout)
    if not xml.is_file():
        c.fail(f"pytest exited {code} without a report:\n{tail}")
        return
    counts = parse_junit(xml)
    c.figures.update({k: counts[k] for k in ("tests", "failures", "errors", "skipped")})
    if code not in (0, 1) or counts["failures"] or counts["errors"]:
        c.fail(f"pytest exited {code}; see {out / 'tests.log'}")
    if counts["tests"] == 0:
        c.fail("no CUDA test was selected")
    if counts["skipped"]:
        c.fail("skipped on a CUDA machine: " + "; ".join(counts["skip_reasons"])[:800])
    if c.status != "FAIL":
        c.status = "PASS"


def _bench_mov(c: Check, args, out: Path, timeout: float) -> dict | None:
    result = out / f"{c.name}.json"
    code, c.seconds, tail = run(commands(c.name, args, out), out / f"{c.name}.log", timeout)
    if code != 0 or not result.is_file():
        c.fail(f"bench_mov exited {code}:\n{tail}")
        return None
    data = json.loads(result.read_text(encoding="utf-8"))
    for row in data["rows"]:
        if row["mode"] != "fwdbwd":
            continue
        label = f"{tuple(row['shape'])} h{row['heads']}"
        figures = f"{row['ours_s'] * 1e3:.2f} ms, {row['speedup']:.1f}x the loop"
        if not math.isnan(row["memory_ratio"]):
            figures += f", peak {row['memory_ratio']:.3f}x"
        c.figures[label] = figures
        worst = max(row["max_abs_diff"].values())
        if not worst <= MOV_TOLERANCE:
            c.fail(f"{label}: |loop - ours| = {worst:.2e} > {MOV_TOLERANCE}")
    c.figures["backend"] = data["backend"]
    return data


def check_bench_mov(c: Check, args, out: Path, timeout: float) -> None:
    data = _bench_mov(c, args, out, timeout)
    if data is not None and data["backend"] != "triton":
        c.fail(f"bench_mov ran backend {data['backend']!r}, not triton")
    if c.status != "FAIL":
        c.status = "PASS"


def check_bench_mov_torch(c: Check, args, out: Path, timeout: float) -> None:
    data = _bench_mov(c, args, out, timeout)
    ours = out / "bench_mov.json"
    if data is not None and ours.is_file():
        rows = json.loads(ours.read_text(encoding="utf-8"))["rows"]
        fast = {(tuple(r["shape"]), r["heads"], r["mode"]): r["ours_s"] for r in rows}
        for row in data["rows"]:
            key = (tuple(row["shape"]), row["heads"], row["mode"])
            if key in fast and row["mode"] == "fwdbwd":
                c.figures[f"torch op / triton time {key[0]} h{key[1]}"] = f"{row['ours_s'] / fast[key]:.1f}x"
    if c.status != "FAIL":
        c.status = "PASS"


def _bench_step(c: Check, args, out: Path, timeout: float) -> dict | None:
    result = out / f"{c.name}.json"
    code, c.seconds, tail = run(commands(c.name, args, out), out / f"{c.name}.log", timeout)
    if code != 0 or not result.is_file():
        c.fail(f"bench_step exited {code}:\n{tail}")
        return None
    data = json.loads(result.read_text(encoding="utf-8"))
    c.figures.update(
        {
            "backend": data["backend"],
            "step": f"{data['step_s'] * 1e3:.1f} ms",
            "backbone only": f"{data['backbone_s'] * 1e3:.1f} ms",
            "head share": f"{100 * data['head_share']:.0f} %",
            "peak": fmt_bytes(data["peak_gpu_bytes"]),
        }
    )
    if not all(math.isfinite(t) for t in data["steps"]):
        c.fail("non-finite step times")
    return data


def check_bench_step(c: Check, args, out: Path, timeout: float) -> None:
    data = _bench_step(c, args, out, timeout)
    if data is not None and data["backend"] != "triton":
        c.fail(f"bench_step ran backend {data['backend']!r}, not triton")
    if c.status != "FAIL":
        c.status = "PASS"


def check_bench_step_torch(c: Check, args, out: Path, timeout: float) -> None:
    data = _bench_step(c, args, out, timeout)
    ours = out / "bench_step.json"
    if data is not None and ours.is_file():
        ratio = data["step_s"] / json.loads(ours.read_text(encoding="utf-8"))["step_s"]
        c.figures["step time torch op / triton"] = f"{ratio:.2f}x"
    if c.status != "FAIL":
        c.status = "PASS"


def check_bundle(c: Check, args, out: Path, timeout: float) -> None:
    result = out / "bundle.json"
    code, c.seconds, tail = run(commands("bundle", args, out), out / "bundle.log", timeout)
    if code != 0 or not result.is_file():
        c.fail(f"bundle run exited {code}:\n{tail}")
        return
    data = json.loads(result.read_text(encoding="utf-8"))
    c.figures.update(
        {
            "iterations": data["iterations"],
            "it/s": f"{data['it_per_s']:.2f} (all: {data['it_per_s_all']:.2f})",
            "peak": fmt_bytes(data["peak_gpu_bytes"]),
            "loss first/last": f"{data['loss_first']:.4f} / {data['loss_last']:.4f}",
            "mov via triton": data["triton_calls"],
        }
    )
    if data["iterations"] != args.iterations:
        c.fail(f"{data['iterations']} iterations ran, {args.iterations} asked")
    if not (math.isfinite(data["loss_first"]) and math.isfinite(data["loss_last"])):
        c.fail("non-finite loss")
    if data["triton_calls"] == 0:
        c.fail("no mixture of vectors ran through Triton")
    if c.status != "FAIL":
        c.status = "PASS"


def check_ddp(c: Check, args, out: Path, timeout: float) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        c.notes.append(f"needs 2 GPUs, {torch.cuda.device_count()} found")
        return
    run_dir = out / "ddp_run"
    code, c.seconds, tail = run(commands("ddp", args, out), out / "ddp.log", timeout)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) if run_dir.is_dir() else []
    c.figures["checkpoints"] = ", ".join(checkpoints) or "none"
    if code != 0:
        c.fail(f"torchrun exited {code}:\n{tail}")
    elif "checkpoint_epoch=2.pt" not in checkpoints:
        c.fail("no checkpoint_epoch=2.pt written")
    if c.status != "FAIL":
        c.status = "PASS"


RUNNERS = {  # check: (function, its own time limit in seconds)
    "tests": (check_tests, 180),
    "bench_mov": (check_bench_mov, 180),
    "bench_step": (check_bench_step, 120),
    "bundle": (check_bundle, 180),
    "ddp": (check_ddp, 150),
    "bench_mov_torch": (check_bench_mov_torch, 120),
    "bench_step_torch": (check_bench_step_torch, 120),
}


# ---------------------------------------------------------------- the bundle run (child process)


def bundle_child(args) -> None:
    """Run the pretraining bundle in this process: ``--iterations`` iterations of ``--size``^3 patches, AMP on CUDA."""
    import importlib

    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow
    from monai.handlers import from_engine

    from monai_cover.networks.blocks.mixture_of_vectors import select_backend

    cuda = torch.cuda.is_available()
    calls = {"triton": 0}
    if select_backend("auto", "cuda" if cuda else "cpu") == "triton":
        # count the calls that reach the kernels (the dispatcher looks the function up at every call)
        kernels = importlib.import_module("monai_cover.networks.blocks.mixture_of_vectors_triton")
        original = kernels.mixture_of_vectors_triton

        def counted(*a, **k):
            calls["triton"] += 1
            return original(*a, **k)

        kernels.mixture_of_vectors_triton = counted
    overrides = {
        "bundle_root": str(PRETRAIN),
        "output_dir": str(Path(args.bundle_child).resolve()),
        "epochs": 1,
        "patch_size": [args.size] * 3,
        "train#trainer#epoch_length": args.iterations,
        "val_interval": 1000,  # no validation round: the figures are those of training
    }
    if args.features:
        overrides["features"] = json.loads(args.features)
    wf = ConfigWorkflow(
        config_file=str(PRETRAIN / "configs" / "train.json"),
        meta_file=str(PRETRAIN / "configs" / "metadata.json"),
        workflow_type="train",
        **overrides,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    stamps, losses = [], []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _stamp(engine):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        loss = from_engine(["loss"], first=True)(engine.state.output)  # one key: the value itself
        losses.append(float(loss[0] if isinstance(loss, (tuple, list)) else loss))

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    wf.run()
    wf.finalize()
    warm = min(10, max(0, len(stamps) - 2))
    n = len(stamps)
    result = dict(
        iterations=n,
        seconds=time.perf_counter() - start,
        it_per_s=(n - 1 - warm) / (stamps[-1] - stamps[warm]) if n - 1 > warm else float("nan"),
        it_per_s_all=n / (stamps[-1] - start) if n else float("nan"),
        peak_gpu_bytes=torch.cuda.max_memory_allocated() if cuda else None,
        loss_first=losses[0] if losses else float("nan"),
        loss_last=losses[-1] if losses else float("nan"),
        triton_calls=calls["triton"],
        amp=bool(wf.parser.get_parsed_content("train#trainer").amp),
        device=str(wf.parser.get_parsed_content("device")),
    )
    print(json.dumps(result))
    if args.child_json:
        Path(args.child_json).write_text(json.dumps(result, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for all checks together (default 600)")
    parser.add_argument("--out", default=None, help="folder for logs and results (default runs/gpu_check/<time>)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--skip", default="", help="comma-separated checks to leave out")
    parser.add_argument("--size", type=int, default=96, help="voxels per axis for bench_step, bundle, ddp (>= 32; 96)")
    parser.add_argument("--iterations", type=int, default=200, help="bundle iterations (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="bench_mov timed rounds (default 5)")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    parser.add_argument("--bundle-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--features", default=None, help=argparse.SUPPRESS)  # a smaller BasicUNet (CPU smoke runs)
    args = parser.parse_args(argv)
    selected = CHECKS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = (set(selected) | skipped) - set(CHECKS)
    if unknown:
        parser.error(f"unknown check(s) {sorted(unknown)}; choose from {', '.join(CHECKS)}")
    if args.budget <= 0 or args.size < 32 or args.iterations < 1 or args.rounds < 1:
        parser.error("--budget, --iterations and --rounds must be positive and --size at least 32 (BasicUNet)")
    args.checks = [c for c in CHECKS if c in selected and c not in skipped]
    return args


def summary(results: list[Check], total: float, budget: float) -> str:
    lines = [f"gpu_check: {total:.0f} s of {budget:.0f} s"]
    for c in results:
        lines.append(f"  {c.status:<4} {c.name:<17} {c.seconds:6.1f} s")
        for key, value in c.figures.items():
            lines.append(f"         {key}: {value}")
        for note in c.notes:
            lines.append("         ! " + note.replace("\n", "\n           "))
    failed = [c.name for c in results if c.status == "FAIL"]
    lines.append("RESULT: " + ("FAIL (" + ", ".join(failed) + ")" if failed else "PASS"))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bundle_child is not None:
        bundle_child(args)
        return 0
    out = Path(args.out or REPO / "runs" / "gpu_check" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if args.dry_run:
        print(f"gpu_check (dry run): checks {', '.join(args.checks)}; budget {args.budget:.0f} s; output {out}")
        for name in args.checks:
            limit = RUNNERS[name][1] if name in RUNNERS else 0
            when = f", only with >= {EXTRA_MIN_S} s left" if name.endswith("_torch") else ""
            when += ", only with >= 2 GPUs" if name == "ddp" else ""
            print(f"  {name} (limit {limit} s{when}):")
            print("    " + (shlex.join(commands(name, args, out)) or "in this process: CUDA, GPUs, triton, backend"))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + args.budget
    results: list[Check] = []
    env_ok = True
    for name in args.checks:
        c = Check(name)
        results.append(c)
        left = deadline - time.perf_counter()
        if name == "env":
            t0 = time.perf_counter()
            try:
                check_env(c, args, out)
            except Exception as e:  # noqa: BLE001 - reported in the summary
                c.fail(f"{type(e).__name__}: {e}")
            c.seconds = time.perf_counter() - t0
            env_ok = c.status == "PASS" or "CUDA is not available" not in " ".join(c.notes)
        elif not env_ok:
            c.notes.append("no CUDA")
        elif left < (EXTRA_MIN_S if name.endswith("_torch") else 10):
            c.notes.append(f"out of time ({left:.0f} s left)")
            if not name.endswith("_torch"):
                c.fail("not run: the time budget was spent")
        else:
            runner, limit = RUNNERS[name]
            try:
                runner(c, args, out, min(limit, left))
            except Exception as e:  # noqa: BLE001 - reported in the summary
                c.fail(f"{type(e).__name__}: {e}")
        print(f"[gpu_check] {c.status} {name} ({c.seconds:.1f} s)", flush=True)
    text = summary(results, time.perf_counter() - start, args.budget)
    print(text)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    return 1 if any(c.status == "FAIL" for c in results) else 0


if __name__ == "__main__":
    sys.exit(main())
