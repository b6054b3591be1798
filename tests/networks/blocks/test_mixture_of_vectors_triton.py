# SPDX-License-Identifier: Apache-2.0
"""The fused Triton mixture of vectors and the backend selection.

Without a GPU the kernels run in Triton's interpreter. Triton decides when ``@triton.jit`` decorates a function, at
import, and for its own library too, whether it builds interpreted kernels (``TRITON_INTERPRET=1``); the two modes
cannot be mixed in one process. So the interpreter checks (``INTERPRETER_CHECKS``) run in one subprocess started
with ``TRITON_INTERPRET=1`` (this file with ``--interpreter-checks``), through the public API
(``mixture_of_vectors(..., backend="triton")`` accepts CPU tensors when the kernels are interpreted), and each check
is reported as one test of :class:`TestTritonKernelsInterpreted`. This process keeps compiled kernels.

The interpreter runs every program of the grid one after another with NumPy, so the shapes are tiny and the checks
give each ``(batch, head)`` one program (a block covering the whole image) except where several blocks are the point.
Tests that need triton are skipped without it; the CUDA tests are skipped without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
import unittest
from unittest import mock

import torch
from parameterized import parameterized

from monai_cover.networks.blocks import MixtureOfVectors, mixture_of_vectors, select_backend

# the module (the package attribute of the same name is the function)
mov_module = importlib.import_module("monai_cover.networks.blocks.mixture_of_vectors")

KERNEL_MODULE = "monai_cover.networks.blocks.mixture_of_vectors_triton"
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
NO_TRITON = "triton is not installed (pip install 'monai_cover[gpu]'; the [test] extra has it)"


def subprocess_env(**extra) -> dict:
    """This environment without a backend override, with this checkout first on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k != mov_module.BACKEND_ENV}
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def reference_mov(query: torch.Tensor, key: torch.Tensor, radius: int, num_heads: int) -> torch.Tensor:
    """The formula with one padded-key slice per offset (float64, plain autograd).

    Head h reads channels h, h + num_heads, ...; a neighbour outside the image gets logit -inf (left out of the
    softmax); offsets run over itertools.product(range(-r, r + 1), repeat=d), component i along array axis i.
    """
    b, c, *spatial = query.shape
    dims, head_dim = len(spatial), c // num_heads
    q = query.reshape(b, head_dim, num_heads, *spatial)
    pad = [radius] * (2 * dims)
    k_pad = torch.nn.functional.pad(key.reshape(b, head_dim, num_heads, *spatial), pad)
    inside = torch.nn.functional.pad(torch.ones(spatial, dtype=torch.bool), pad)
    offsets = list(itertools.product(range(-radius, radius + 1), repeat=dims))
    logits = []
    for offset in offsets:
        window = tuple(slice(radius + o, radius + o + s) for o, s in zip(offset, spatial))
        dot = (q * k_pad[(slice(None),) * 3 + window]).sum(1) / math.sqrt(head_dim)  # (B, heads, *S)
        logits.append(dot.masked_fill(~inside[window], float("-inf")))
    weights = torch.softmax(torch.stack(logits, 0), dim=0)  # (K, B, heads, *S)
    ddf = [sum(w * o[i] for w, o in zip(weights, offsets)) for i in range(dims)]
    return torch.stack(ddf, 1).mean(2)  # (B, d, heads, *S) -> (B, d, *S)


def inputs(shape, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(shape, generator=gen).to(dtype)
    k = torch.randn(shape, generator=gen).to(dtype)
    g = torch.randn(shape[0], len(shape) - 2, *shape[2:], generator=gen)
    return q, k, g


def reference_with_grads(q, k, g, radius, heads):
    """Result, dq and dk of the float64 reference at the (already rounded) values of ``q`` and ``k``."""
    q64 = q.detach().double().requires_grad_(True)
    k64 = k.detach().double().requires_grad_(True)
    out = reference_mov(q64, k64, radius, heads)
    dq, dk = torch.autograd.grad((out * g.double()).sum(), (q64, k64))
    return out.detach(), dq, dk


def run_kernels(fn, q, k, g, radius, heads):
    q = q.detach().clone().requires_grad_(True)
    k = k.detach().clone().requires_grad_(True)
    out = fn(q, k, radius, heads)
    dq, dk = torch.autograd.grad((out * g).sum(), (q, k))
    return out, dq, dk


# (shape (B, C, *S), radius, heads): radii 1-3, 1/2/4 heads (head_dim 1, 2, 3, 4, 6, 8: powers of two and not),
# 2D and 3D, odd sizes, images smaller than the neighbourhood along some axes
CASES = [
    ((1, 4, 5, 6, 7), 1, 1),
    ((2, 8, 5, 6, 7), 1, 4),
    ((1, 8, 5, 6, 7), 2, 2),
    ((1, 4, 3, 4, 5), 2, 4),
    ((1, 3, 4, 5, 3), 3, 1),
    ((1, 4, 3, 2, 4), 3, 2),
    ((2, 4, 7, 9), 1, 1),
    ((1, 8, 7, 9), 2, 2),
    ((2, 6, 5, 4), 2, 2),
    ((1, 12, 9, 7), 3, 4),
    ((1, 4, 8, 3), 3, 1),
]

# ---- checks that run in Triton's interpreter (in a subprocess started with TRITON_INTERPRET=1) ----

INTERPRETER_CHECKS = {}


def interpreter_check(name):
    def register(fn):
        INTERPRETER_CHECKS[name] = fn
        return fn

    return register


def kernel_module():
    module = importlib.import_module(KERNEL_MODULE)
    assert module.INTERPRETED, "these checks run under TRITON_INTERPRET=1 only"
    return module


def whole_image_block(spatial):
    """One program covers the whole image (fewest interpreted programs)."""
    block = max(16, 1 << (math.prod(spatial) - 1).bit_length())
    return mock.patch.object(kernel_module(), "_block_size", lambda _hdp: block)


def triton_op(q, k, radius, heads):
    return mixture_of_vectors(q, k, radius, heads, backend="triton")


def check_against_reference(shape, radius, heads, seed=0, atol=1e-5):
    q, k, g = inputs(shape, seed)
    expected = reference_with_grads(q, k, g, radius, heads)
    got = run_kernels(triton_op, q, k, g, radius, heads)
    assert got[0].shape == (shape[0], len(shape) - 2, *shape[2:]), got[0].shape
    assert got[0].dtype == torch.float32, got[0].dtype
    for name, a, b in zip(("out", "dq", "dk"), got, expected):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _register_reference_cases():
    for shape, radius, heads in CASES:
        name = f"reference_{len(shape) - 2}d_{'x'.join(map(str, shape))}_r{radius}_h{heads}"

        def check(shape=shape, radius=radius, heads=heads):
            with whole_image_block(shape[2:]):
                check_against_reference(shape, radius, heads, seed=radius * 10 + heads)

        interpreter_check(name)(check)


_register_reference_cases()


@interpreter_check("several_blocks")
def check_several_blocks():
    """Several programs per (batch, head), the last one partly outside the image."""
    for shape, radius, heads, block in (((1, 4, 11, 13), 2, 2, 32), ((1, 2, 4, 3, 5), 1, 1, 16)):
        assert math.prod(shape[2:]) % block > 0
        with mock.patch.object(kernel_module(), "_block_size", lambda _hdp, b=block: b):
            check_against_reference(shape, radius, heads, seed=3)


@interpreter_check("default_block_size")
def check_default_block_size():
    """The block size the GPU uses (128 voxels at head_dim <= 8): 2 programs per (batch, head) here."""
    check_against_reference((1, 4, 13, 17), 2, 2, seed=4)


def _half_check(dtype, shape, radius, heads):
    """bf16/fp16 read as they are, float32 arithmetic: the result matches float64 at the rounded inputs, the
    gradients come back in the input dtype, equal to the float64 gradients up to one rounding."""
    q, k, g = inputs(shape, 5, dtype)
    out_ref, dq_ref, dk_ref = reference_with_grads(q, k, g, radius, heads)
    with whole_image_block(shape[2:]):
        out, dq, dk = run_kernels(triton_op, q, k, g, radius, heads)
    assert (out.dtype, dq.dtype, dk.dtype) == (torch.float32, dtype, dtype), (out.dtype, dq.dtype, dk.dtype)
    torch.testing.assert_close(out.double(), out_ref, rtol=0, atol=1e-5)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(dq.double(), dq_ref, rtol=eps, atol=1e-5)
    torch.testing.assert_close(dk.double(), dk_ref, rtol=eps, atol=1e-5)


interpreter_check("bfloat16_inputs")(lambda: _half_check(torch.bfloat16, (1, 8, 4, 5, 6), 2, 2))
interpreter_check("float16_inputs")(lambda: _half_check(torch.float16, (1, 8, 9, 7), 3, 2))


@interpreter_check("mixed_dtypes_promoted")
def check_mixed_dtypes():
    """A bf16 query with a float32 key (a key warped under autocast) runs in float32; dq comes back in bf16."""
    q, k, g = inputs((1, 4, 5, 6), 6)
    q16 = q.bfloat16().requires_grad_(True)
    k32 = k.clone().requires_grad_(True)
    out = triton_op(q16, k32, 2, 2)
    dq, dk = torch.autograd.grad((out * g).sum(), (q16, k32))
    assert (dq.dtype, dk.dtype) == (torch.bfloat16, torch.float32), (dq.dtype, dk.dtype)
    expected = reference_with_grads(q16.float(), k32, g, 2, 2)
    torch.testing.assert_close(out.double(), expected[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(dk.double(), expected[2], rtol=0, atol=1e-5)


@interpreter_check("key_grad_only_strided_inputs")
def check_key_grad_only():
    """Only the key needs a gradient (the dq kernel is skipped); inputs are non-contiguous views."""
    gen = torch.Generator().manual_seed(8)
    big_q = torch.randn(1, 8, 10, 12, generator=gen)
    big_k = torch.randn(1, 8, 10, 12, generator=gen, requires_grad=True)
    q, k = big_q[:, :, ::2, 1::2], big_k[:, :, 1::2, ::2]  # k: a non-leaf view that needs a gradient
    g = torch.randn(1, 2, 5, 6, generator=gen)
    assert not q.is_contiguous()
    out = triton_op(q, k, 3, 2)
    (dk,) = torch.autograd.grad((out * g).sum(), (k,))
    expected = reference_with_grads(q, k, g, 3, 2)
    torch.testing.assert_close(out.double(), expected[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(dk.double(), expected[2], rtol=0, atol=1e-5)


@interpreter_check("outside_neighbours_excluded")
def check_outside_excluded():
    """All logits far below -1000: only in-image neighbours take weight (excluded, not a -1000 fill)."""
    gen = torch.Generator().manual_seed(5)
    k = torch.randn(1, 8, 4, 4, 5, generator=gen).abs() + 1.0
    q = -100.0 * k
    with whole_image_block((4, 4, 5)):
        ddf = triton_op(q, k, 2, 1)
    assert torch.isfinite(ddf).all()
    assert ddf[0, :, 0, 0, 0].min().item() >= 0.0 and ddf[0, :, -1, -1, -1].max().item() <= 0.0
    # logits of about -1e3: float32 rounding alone moves them by ~1e-4, hence the looser tolerance here
    torch.testing.assert_close(ddf.double(), reference_mov(q.double(), k.double(), 2, 1), rtol=0, atol=1e-3)


@interpreter_check("module_form_metatensor_auto_env")
def check_module_form():
    """MixtureOfVectors(backend='triton') with MetaTensor inputs, and backend='auto' with MONAI_COVER_MOV_BACKEND
    =triton, reach the kernels; the PyTorch op agrees."""
    from monai.data import MetaTensor

    q, k, _ = inputs((2, 4, 5, 4, 3), 9)
    expected = mixture_of_vectors(q, k, 1, 2, backend="torch")
    module = kernel_module()
    with whole_image_block((5, 4, 3)):
        with mock.patch.object(module, "mixture_of_vectors_triton", wraps=module.mixture_of_vectors_triton) as spy:
            out = MixtureOfVectors(3, radius=1, num_heads=2, backend="triton")(MetaTensor(q), MetaTensor(k))
            with mock.patch.dict(os.environ, {mov_module.BACKEND_ENV: "triton"}):
                out_env = MixtureOfVectors(3, radius=1, num_heads=2)(q, k)
        assert spy.call_count == 2, spy.call_count
    assert type(out) is torch.Tensor, type(out)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_env, expected, rtol=0, atol=1e-5)


def run_interpreter_checks(names) -> dict:
    """``{name: {"ok", "message", "seconds"}}`` of the named checks, run in this process."""
    import time
    import traceback

    results = {}
    for name in names:
        start = time.perf_counter()
        try:
            INTERPRETER_CHECKS[name]()
            ok, message = True, ""
        except Exception:  # noqa: BLE001 - reported to the parent test
            ok, message = False, traceback.format_exc()[-4000:]
        results[name] = {"ok": ok, "message": message, "seconds": round(time.perf_counter() - start, 2)}
    return results


@unittest.skipUnless(HAS_TRITON, NO_TRITON)
class TestTritonKernelsInterpreted(unittest.TestCase):
    """The kernels in Triton's interpreter on CPU tensors against the float64 reference (tolerance 1e-5 in fp32).

    Triton decides at import (its own library too) whether ``@triton.jit`` builds interpreted kernels, so the
    checks run in one subprocess started with ``TRITON_INTERPRET=1``; each check is reported here as one test.
    """

    results: dict = {}

    @classmethod
    def setUpClass(cls):
        env = subprocess_env(TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--interpreter-checks"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600, encoding="utf-8", errors="replace",
        )
        if proc.returncode != 0:
            raise RuntimeError(f"interpreter subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        cls.results = json.loads(proc.stdout.strip().splitlines()[-1])

    @parameterized.expand([(name,) for name in INTERPRETER_CHECKS])
    def test_interpreted(self, name):
        result = self.results[name]
        self.assertTrue(result["ok"], f"{name} ({result['seconds']} s):\n{result['message']}")


@unittest.skipUnless(HAS_TRITON, NO_TRITON)
class TestTritonCompilesForGPU(unittest.TestCase):
    """Without a GPU: the three kernels compile ahead of time to cubin for sm_90 (H100/H200) and sm_80 (A100).

    The interpreter checks the arithmetic but not Triton's code generation (types, loops, masks, stores in bf16);
    this runs the whole compiler down to ptxas (bundled with triton), with the constexprs the launcher uses.
    """

    # (dtype, shape, radius, heads, compute capability)
    CONFIGS = [
        ("fp32", (2, 32, 24, 20, 18), 2, 4, 90),
        ("bf16", (1, 3, 40, 33), 3, 1, 90),
        ("fp16", (1, 32, 9, 10, 11), 1, 1, 80),
    ]

    def test_kernels_compile_to_cubin(self):
        import triton

        try:
            from triton.backends.compiler import GPUTarget
            from triton.compiler import ASTSource
        except ImportError as e:  # the ahead-of-time API moved in another triton version
            self.skipTest(f"triton {triton.__version__}: no ahead-of-time compile API ({e})")
        module = importlib.import_module(KERNEL_MODULE)
        if module.INTERPRETED:
            self.skipTest("TRITON_INTERPRET=1 is set for the whole test process")
        pointers = {
            "_mov_fwd_kernel": ("in", "in", "f32", "f32"),
            "_mov_bwd_dq_kernel": ("in", "in", "f32", "f32", "f32", "in"),
            "_mov_bwd_dk_kernel": ("in", "in", "f32", "f32", "f32", "in"),
        }
        for dtype, shape, radius, heads, capability in self.CONFIGS:
            _, consts, _ = module._launch_args(torch.empty(shape, device="meta"), radius, heads)
            for kernel in (module._mov_fwd_kernel, module._mov_bwd_dq_kernel, module._mov_bwd_dk_kernel):
                kinds = pointers[kernel.__name__]
                signature = {
                    name: "*" + (dtype if kind == "in" else "fp32") for name, kind in zip(kernel.arg_names, kinds)
                }
                signature.update(S0="i32", S1="i32", S2="i32", q_scale="fp32")
                if "grad_scale" in kernel.arg_names:
                    signature["grad_scale"] = "fp32"
                signature.update({name: "constexpr" for name in consts})
                self.assertEqual(set(signature), set(kernel.arg_names))
                with self.subTest(kernel=kernel.__name__, dtype=dtype, shape=shape, sm=capability):
                    compiled = triton.compile(
                        ASTSource(kernel, signature, consts),
                        target=GPUTarget("cuda", capability, 32),
                        options=dict(module._OPTIONS),
                    )
                    self.assertGreater(len(compiled.asm["cubin"]), 0)

    def test_compiled_kernels_refuse_cpu_tensors(self):
        """In this (not interpreted) process the kernels say what to do with CPU tensors instead of failing."""
        compiled = importlib.import_module(KERNEL_MODULE)
        if compiled.INTERPRETED:
            self.skipTest("TRITON_INTERPRET=1 is set for the whole test process")
        x = torch.randn(1, 4, 5, 6)
        with self.assertRaisesRegex(ValueError, r"CUDA tensors.*backend='torch'"):
            mixture_of_vectors(x, x, backend="triton")
        with self.assertRaisesRegex(ValueError, r"CUDA tensors"):
            compiled.mixture_of_vectors_triton(x.double(), x.double())


class TestBackendSelection(unittest.TestCase):
    """select_backend and the dispatch, with or without triton (no GPU needed)."""

    def setUp(self):
        env = mock.patch.dict(os.environ)
        env.start()
        os.environ.pop(mov_module.BACKEND_ENV, None)
        self.addCleanup(env.stop)

    def test_auto_picks_torch_on_cpu_and_triton_on_cuda(self):
        for available in (True, False):
            with mock.patch.object(mov_module, "triton_available", return_value=available):
                self.assertEqual(select_backend("auto", "cpu"), "torch")
                self.assertEqual(select_backend("auto", torch.device("cpu"), torch.bfloat16), "torch")
                expected = "triton" if available else "torch"
                for device, dtype in (("cuda", torch.float32), ("cuda:1", torch.bfloat16), ("cuda", torch.float16)):
                    self.assertEqual(select_backend("auto", device, dtype), expected, (device, dtype))
                # float64 stays with the exact PyTorch op on every device
                self.assertEqual(select_backend("auto", "cuda", torch.float64), "torch")
        self.assertEqual(select_backend(), "torch")

    def test_forced_backends_and_environment(self):
        with mock.patch.object(mov_module, "triton_available", return_value=True):
            self.assertEqual(select_backend("torch", "cuda"), "torch")
            self.assertEqual(select_backend("triton", "cpu"), "triton")
            os.environ[mov_module.BACKEND_ENV] = "torch"
            self.assertEqual(select_backend("auto", "cuda"), "torch")
            self.assertEqual(select_backend("triton", "cuda"), "triton")  # an explicit argument wins
            os.environ[mov_module.BACKEND_ENV] = " Triton "
            self.assertEqual(select_backend("auto", "cpu"), "triton")
            os.environ[mov_module.BACKEND_ENV] = "auto"
            self.assertEqual(select_backend("auto", "cuda"), "triton")
            os.environ[mov_module.BACKEND_ENV] = ""
            self.assertEqual(select_backend("auto", "cuda"), "triton")
            os.environ[mov_module.BACKEND_ENV] = "cuda"
            with self.assertRaisesRegex(ValueError, r"MONAI_COVER_MOV_BACKEND.*'cuda'"):
                select_backend("auto", "cpu")
        with self.assertRaisesRegex(ValueError, r"backend must be one of .*'gpu'"):
            select_backend("gpu", "cpu")

    def test_dispatch_on_cpu(self):
        q, k, _ = inputs((1, 8, 5, 6, 7), 1)
        torch.testing.assert_close(mixture_of_vectors(q, k, 2, 2), mixture_of_vectors(q, k, 2, 2, backend="torch"))
        with mock.patch.object(mov_module, "triton_available", return_value=False):
            with self.assertRaisesRegex(ImportError, r"monai_cover\[gpu\]"):
                mixture_of_vectors(q, k, 2, 2, backend="triton")
        with self.assertRaisesRegex(ValueError, r"backend must be one of"):
            mixture_of_vectors(q, k, backend="cuda")
        with self.assertRaisesRegex(ValueError, r"backend must be one of"):
            MixtureOfVectors(3, backend="fast")
        self.assertIn("backend='torch'", repr(MixtureOfVectors(3, backend="torch")))
        self.assertNotIn("backend", repr(MixtureOfVectors(3)))

    def test_import_and_cpu_use_without_triton(self):
        """In a process where ``import triton`` fails: the package imports, runs on CPU, auto never picks triton."""
        code = "\n".join(
            [
                "import sys",
                "sys.modules['triton'] = None  # import triton -> ImportError, find_spec -> None",
                "import torch, monai_cover",
                "from monai_cover.networks.blocks import mixture_of_vectors, select_backend",
                "assert select_backend('auto', 'cuda') == 'torch'",
                "x = torch.randn(1, 4, 5, 6, 7)",
                "assert mixture_of_vectors(x, x, 1, 2).shape == (1, 3, 5, 6, 7)",
                "try:",
                "    mixture_of_vectors(x, x, backend='triton')",
                "except ImportError as e:",
                "    assert 'monai_cover[gpu]' in str(e), e",
                "else:",
                "    raise AssertionError('no ImportError')",
                "print('ok')",
            ]
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=300,
                encoding="utf-8", errors="replace"
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(proc.stdout.strip(), "ok")


# (shape, radius, heads) on the GPU: several blocks, odd sizes, radius larger than an axis
CUDA_CASES = [
    ((2, 32, 20, 24, 28), 2, 4),
    ((1, 8, 33, 17, 40), 3, 1),
    ((2, 16, 5, 70, 9), 1, 2),
    ((2, 16, 64, 50), 3, 2),
    ((3, 8, 37, 3), 2, 4),
]


@unittest.skipUnless(HAS_CUDA, "needs CUDA")
@unittest.skipUnless(HAS_TRITON, NO_TRITON)
class TestTritonCUDA(unittest.TestCase):
    """Compiled kernels on the GPU against the PyTorch op on the GPU, forward and backward, fp32 and bf16."""

    def compare(self, shape, radius, heads, dtype, atol_out, atol_grad, rtol_grad):
        q, k, g = (x.cuda() for x in inputs(shape, radius + heads, dtype))
        ours = run_kernels(lambda a, b, r, h: mixture_of_vectors(a, b, r, h, backend="triton"), q, k, g, radius, heads)
        ref = run_kernels(lambda a, b, r, h: mixture_of_vectors(a, b, r, h, backend="torch"), q, k, g, radius, heads)
        self.assertEqual(ours[0].dtype, torch.float32)
        self.assertEqual((ours[1].dtype, ours[2].dtype), (dtype, dtype))
        torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=atol_out)
        for a, b in zip(ours[1:], ref[1:]):
            torch.testing.assert_close(a.float(), b.float(), rtol=rtol_grad, atol=atol_grad)

    @parameterized.expand(CUDA_CASES)
    def test_fp32_matches_torch_op(self, shape, radius, heads):
        self.compare(shape, radius, heads, torch.float32, 1e-4, 1e-4, 1e-4)

    @parameterized.expand(CUDA_CASES)
    def test_bf16_matches_torch_op(self, shape, radius, heads):
        """Same bf16 values into both (the torch op upcasts them): float32 results agree closely; the gradients
        are bf16 on both sides, so they agree to a bf16 rounding."""
        self.compare(shape, radius, heads, torch.bfloat16, 1e-4, 2e-2, 1.6e-2)

    def test_matches_float64_reference(self):
        q, k, g = inputs((1, 8, 5, 6, 7), 0)
        expected = reference_with_grads(q, k, g, 2, 2)
        got = run_kernels(
            lambda a, b, r, h: mixture_of_vectors(a, b, r, h, backend="triton"), q.cuda(), k.cuda(), g.cuda(), 2, 2
        )
        for a, b in zip(got, expected):
            torch.testing.assert_close(a.double().cpu(), b, rtol=0, atol=1e-5)

    def test_auto_selects_triton_under_autocast(self):
        self.assertEqual(select_backend("auto", "cuda"), "triton")
        q, k, g = (x.cuda() for x in inputs((2, 16, 12, 10, 14), 7))
        q.requires_grad_(True)
        k.requires_grad_(True)
        mov = MixtureOfVectors(3, radius=2, num_heads=4)
        with mock.patch.object(mov_module, "_MixtureOfVectorsFunction") as torch_op:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = mov(q.bfloat16(), k)  # mixed: bf16 query, float32 key
            torch_op.apply.assert_not_called()
        self.assertEqual(out.dtype, torch.float32)
        (out * g).sum().backward()
        self.assertTrue(torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all())
        ref = mixture_of_vectors(q.detach().bfloat16().float(), k.detach(), 2, 4, backend="torch")
        torch.testing.assert_close(out.detach(), ref, rtol=0, atol=1e-4)

    @unittest.skipUnless(HAS_CUDA and torch.cuda.device_count() > 1, "needs 2 GPUs")
    def test_second_gpu_while_first_is_current(self):
        q, k, g = inputs((1, 8, 9, 10, 11), 3)
        expected = run_kernels(lambda a, b, r, h: mixture_of_vectors(a, b, r, h, backend="torch"), q, k, g, 2, 2)
        with torch.cuda.device(0):
            dev = torch.device("cuda:1")
            got = run_kernels(
                lambda a, b, r, h: mixture_of_vectors(a, b, r, h, backend="triton"),
                q.to(dev),
                k.to(dev),
                g.to(dev),
                2,
                2,
            )
        for a, b in zip(got, expected):
            self.assertEqual(a.device, dev)
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    if sys.argv[1:] == ["--interpreter-checks"]:  # the subprocess of TestTritonKernelsInterpreted
        assert os.environ.get("TRITON_INTERPRET") == "1"
        print(json.dumps(run_interpreter_checks(list(INTERPRETER_CHECKS))))
    else:
        unittest.main()
