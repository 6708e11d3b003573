"""HF on the GPU, measured (issue 17): one script, one JSON line.

For the papers' two acoustic models on synthetic random frames (40-dim features,
standard normal, random pdf targets; context, width and depth from
``conf/model/dnn_bn50.yaml`` and ``conf/model/dnn_swb300.yaml``; 2220 and 9300 pdfs),
float32 parameters, it measures:

* ``gradient``: :func:`asr_hf.optim.curvature.loss_and_gradient` over a 100k-frame
  batch (pre-spliced inputs, chunks of :func:`~asr_hf.optim.device.auto_chunk_size`):
  frames/s and TFLOP/s, in TF32 and in IEEE float32 on CUDA;
* ``ggn_product``: :class:`~asr_hf.optim.curvature.GGNOperator` products on a 100k-frame
  curvature sample, forward pass cached (the situation inside CG): products/s,
  TFLOP/s and the fraction of the H200's dense peak (TF32 ~495, FP32 ~67 TFLOP/s),
  the cache's bytes (measured) next to what caching ``s'`` as well would have added;
  with ``torch.compile`` as well (``compile`` section; CUDA only unless ``--compile``);
* ``precision``: relative error of the TF32 and float32 products and gradients against
  a float64 copy of the same network and data, CG's ``phi`` after ``k`` iterations
  (TF32 / float32 operator vs float64), and the accumulation error of a float32
  ``torch.dot`` of ``P`` same-sign terms (CG's inner products) on the device;
* ``external``: the same product through curvlinops and BackPACK (when installed:
  ``scripts/make_wheelhouse.sh``), time and agreement with ours (IEEE float32);
* ``hf_iteration``: ``hf_lbfgs_sampled`` steps of the real
  :class:`~asr_hf.optim.hf.HessianFree` on a device-resident
  :class:`~asr_hf.nnet.data.FrameSet` (gradient on all 1M frames, flexible PCG for up to
  100 products on a 50k-frame curvature sample, progress test off, held-out set of 100k
  frames), with its time breakdown;
* ``sgd``: SGD (momentum 0.9) minibatches of 256 and 1024 drawn through
  ``FrameSet.minibatches`` (splicing included), frames/s in float32 (and TF32 on CUDA);
* ``loading``: ``FrameSet.batches`` alone (index slice + splice + gather, nothing
  computed), frames/s at the same batch sizes and at the HF chunk size, beside the
  training frames/s of the same batch size.

Every section records ``peak_mem_bytes`` (``torch.cuda.max_memory_allocated`` since the
section started; ``null`` off CUDA).  A section that fails records its error and the
run goes on; sections left when ``--budget-s`` is spent are skipped, said so in the JSON.

FLOPs are counted analytically from the weight shapes (multiply-add = 2 FLOPs; biases,
activations and the output Hessian ignored).  With ``P_l = d_out d_in`` of Linear layer
``l`` and ``P = sum_l P_l``, per frame:

* gradient: forward ``2P`` + weight gradients ``2P`` + input gradients ``2(P - P_1)``
  = ``6P - 2P_1``;
* GGN product (cached forward): R-forward ``V_l a_{l-1}`` for every layer and
  ``W_l R a_{l-1}`` above the first, backward ``delta_l^T a_{l-1}`` for every layer and
  ``delta_l W_l`` above the first = ``8P - 4P_1``.

    python bench/bench_gpu.py --device cpu --tiny      # smoke run, ~1-2 min on 2 cores
    python bench/bench_gpu.py --device cuda --out $OUT/bench_gpu.json   # H200, < 6 min

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr_hf.nnet.data import FrameSet, Utterances  # noqa: E402
from asr_hf.nnet.model import DNN, DNNConfig  # noqa: E402
from asr_hf.optim.base import LossKind, SampledData  # noqa: E402
from asr_hf.optim.curvature import GGNOperator, loss_and_gradient  # noqa: E402
from asr_hf.optim.device import auto_chunk_size, tf32_matmuls  # noqa: E402
from asr_hf.optim.layout import ParamLayout  # noqa: E402
from asr_hf.optim.registry import build_optimizer  # noqa: E402
from asr_hf.optim.solvers import conjugate_gradient  # noqa: E402

CE = LossKind.CROSS_ENTROPY
FEAT_DIM = 40
NETS = {"dnn_bn50": 2220, "dnn_swb300": 9300}  # pdfs (papers: ~2.2k BN-50, ~9.3k SWB-300)
PEAK_FLOPS = {"tf32": 495e12, "fp32": 67e12}  # H200 SXM dense tensor-core TF32 / FP32 (datasheet)

FULL = dict(grad_frames=100_000, curv_frames=100_000, compare_frames=16_384, hf_train_frames=1_000_000,
            hf_heldout_frames=100_000, hf_curv_frames=50_000, cg_iters=100, hf_iters=2, precision_cg_iters=20,
            sgd_steps=300, repeats=5, utt_frames=300)  # fmt: skip
TINY = dict(grad_frames=4096, curv_frames=2048, compare_frames=512, hf_train_frames=20_000, hf_heldout_frames=2000,
            hf_curv_frames=1000, cg_iters=10, hf_iters=1, precision_cg_iters=5, sgd_steps=10, repeats=2,
            utt_frames=100)  # fmt: skip


# ----------------------------------------------------------------------------- helpers


def model_config(name: str, tiny: bool) -> tuple[DNNConfig, int]:
    """The net's :class:`DNNConfig` from ``conf/model/<name>.yaml`` (``key: value`` lines)
    and its pdf count; ``tiny`` keeps the context, 2 layers, width / 16, pdfs / 20."""
    fields = {}
    for line in (ROOT / "conf" / "model" / f"{name}.yaml").read_text().splitlines():
        key, sep, value = line.split("#")[0].partition(":")
        if sep and key.strip() in ("context", "hidden_dim", "num_layers", "activation"):
            fields[key.strip()] = value.strip()
    cfg = DNNConfig(int(fields["context"]), int(fields["hidden_dim"]), int(fields["num_layers"]), fields["activation"])
    pdfs = NETS[name]
    if tiny:
        cfg = DNNConfig(cfg.context, cfg.hidden_dim // 16, 2, cfg.activation)
        pdfs //= 20
    return cfg, pdfs


def weight_counts(net: nn.Module) -> tuple[int, int]:
    """``(P, P_1)``: weights of all Linear layers and of the first."""
    lin = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return sum(m.weight.numel() for m in lin), lin[0].weight.numel()


def grad_flops_per_frame(net: nn.Module) -> int:
    p, p1 = weight_counts(net)
    return 6 * p - 2 * p1


def ggn_flops_per_frame(net: nn.Module) -> int:
    p, p1 = weight_counts(net)
    return 8 * p - 4 * p1


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
        """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def precisions(device: torch.device) -> list[str]:
    return ["tf32", "fp32"] if device.type == "cuda" else ["fp32"]


def in_precision(precision: str, device: torch.device):
    return tf32_matmuls(precision == "tf32", device)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double().to(ref.device), ref.double()
    return float(f"{float((a - ref).norm() / ref.norm()):.3e}")


def rnd(x: Optional[float], digits: int = 4) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(f"{x:.{digits}g}")


def make_net(cfg: DNNConfig, pdfs: int, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return DNN(FEAT_DIM, pdfs, cfg).net.to(device=device, dtype=dtype)


def make_frames(n: int, input_dim: int, pdfs: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, input_dim, device=device, generator=g)
    t = torch.randint(0, pdfs, (n,), device=device, generator=g)
    return x, t


def chunked(x: torch.Tensor, t: torch.Tensor, chunk: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[s : s + chunk], t[s : s + chunk]) for s in range(0, x.shape[0], chunk)]


def make_frameset(n: int, context: int, pdfs: int, device: torch.device, utt_frames: int, seed: int) -> FrameSet:
    rng = np.random.default_rng(seed)
    lengths = []
    left = n
    while left > 0:
        k = min(left, int(rng.integers(utt_frames // 2, 2 * utt_frames)))
        lengths.append(k)
        left -= k
    utts = Utterances(
        [f"u{i}" for i in range(len(lengths))],
        rng.standard_normal((n, FEAT_DIM), dtype=np.float32),
        rng.integers(0, pdfs, n).astype(np.int64),
        np.asarray(lengths, dtype=np.int64),
    )
    return FrameSet(utts, context, device)


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict[str, Any]) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        out["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- sections


def bench_gradient(name: str, cfg: DNNConfig, pdfs: int, device: torch.device, s: dict, clock: Clock) -> dict:
    net = make_net(cfg, pdfs, device)
    chunk = auto_chunk_size(net, device)
    x, t = make_frames(s["grad_frames"], net[0].in_features, pdfs, device, seed=1)
    chunks = chunked(x, t, chunk)
    flops = grad_flops_per_frame(net) * x.shape[0]
    out: dict[str, Any] = {"frames": x.shape[0], "chunk_size": chunk, "flops_per_frame": grad_flops_per_frame(net)}
    for prec in precisions(device):
        res: dict[str, Any] = {}
        with peak_memory(device, res), in_precision(prec, device):
            sec = clock.time(lambda: loss_and_gradient(net, CE, chunks, backend="sequential"), s["repeats"])
        res.update(seconds=rnd(sec), frames_per_s=rnd(x.shape[0] / sec), tflops=rnd(flops / sec / 1e12))
        out[prec] = res
    return out


def bench_ggn(name: str, cfg: DNNConfig, pdfs: int, device: torch.device, s: dict, clock: Clock,
              compile: bool = False) -> dict:  # fmt: skip
    net = make_net(cfg, pdfs, device)
    chunk = auto_chunk_size(net, device)
    x, t = make_frames(s["curv_frames"], net[0].in_features, pdfs, device, seed=2)
    n = x.shape[0]
    layout = ParamLayout.from_module(net)
    v = torch.randn(layout.numel, device=device, generator=torch.Generator(device=device).manual_seed(3))
    flops = ggn_flops_per_frame(net) * n
    out: dict[str, Any] = {"frames": n, "chunk_size": chunk, "params": layout.numel,
                           "flops_per_frame": ggn_flops_per_frame(net)}  # fmt: skip
    with peak_memory(device, out):
        with in_precision(precisions(device)[0], device):
            op = GGNOperator(net, CE, chunked(x, t, chunk), backend="sequential", compile=compile)
            clock.sync()
            t0 = time.perf_counter()
            op.matvec(v)  # fills the forward cache (and compiles)
            clock.sync()
            out["first_product_s"] = rnd(time.perf_counter() - t0)
        if compile:
            out["compiled"] = op.backend.compiled  # type: ignore[attr-defined]
        hidden = sum(m.out_features for m in net if isinstance(m, nn.Linear)) - pdfs
        out["cache_bytes"] = op.cache_nbytes()
        out["cache_bytes_per_frame"] = rnd(op.cache_nbytes() / n)
        out["cache_bytes_if_s_prime_cached"] = op.cache_nbytes() + n * hidden * x.element_size()
        for prec in precisions(device) if not compile else precisions(device)[:1]:
            with in_precision(prec, device):
                sec = clock.time(lambda: op.matvec(v), s["repeats"])
            tf = flops / sec / 1e12
            out[prec] = {"seconds": rnd(sec), "products_per_s": rnd(1 / sec), "tflops": rnd(tf),
                         "fraction_of_h200_peak": rnd(tf * 1e12 / PEAK_FLOPS[prec], 3)}  # fmt: skip
    return out


def bench_precision(name: str, cfg: DNNConfig, pdfs: int, device: torch.device, s: dict, clock: Clock) -> dict:
    """Products, gradients and CG's phi in TF32 / float32 against float64 (same net, data)."""
    net32 = make_net(cfg, pdfs, device)
    net64 = make_net(cfg, pdfs, device, torch.float64)
    x, t = make_frames(s["compare_frames"], net32[0].in_features, pdfs, device, seed=4)
    chunk = auto_chunk_size(net32, device)
    layout = ParamLayout.from_module(net64)
    v = torch.randn(layout.numel, device=device, dtype=torch.float64,
                    generator=torch.Generator(device=device).manual_seed(5))  # fmt: skip
    k = s["precision_cg_iters"]
    damping = 1e-2
    out: dict[str, Any] = {"frames": x.shape[0], "cg_iters": k, "damping": damping}
    # CG's inner products are torch.dot of float32 vectors of P elements (solvers.py): their
    # accumulation error on P same-sign terms (x.b in phi, d.Ad in alpha), device-dependent
    u = torch.rand(layout.numel, device=device, generator=torch.Generator(device=device).manual_seed(11))
    exact = float(torch.dot(u.double(), u.double()))
    out["dot_rel_err_p_positive_terms"] = {
        "torch_dot_fp32": rnd(abs(float(torch.dot(u, u)) / exact - 1), 3),
        "mul_sum_fp64_accumulate": rnd(abs(float((u * u).sum(dtype=torch.float64)) / exact - 1), 3),
    }
    del u
    with peak_memory(device, out):
        op64 = GGNOperator(net64, CE, chunked(x.double(), t, chunk), backend="sequential", damping=damping)
        ref = op64.matvec(v)
        g64 = loss_and_gradient(net64, CE, chunked(x.double(), t, chunk)).grad
        cg64 = conjugate_gradient(op64, -g64, max_iters=k, progress_tol=None, grid=[k])
        for prec in precisions(device):
            with in_precision(prec, device):
                op = GGNOperator(net32, CE, chunked(x, t, chunk), backend="sequential", damping=damping)
                got = op.matvec(v.float())
                g = loss_and_gradient(net32, CE, chunked(x, t, chunk)).grad
                cg = conjugate_gradient(op, -g, max_iters=k, progress_tol=None, grid=[k])
            out[prec] = {
                "product_rel_err": rel_err(got, ref),
                "gradient_rel_err": rel_err(g, g64),
                "cg_phi": rnd(cg.phis[-1], 8),
                "cg_phi_fp64": rnd(cg64.phis[-1], 8),
                "cg_phi_rel_err": rnd(abs(cg.phis[-1] - cg64.phis[-1]) / abs(cg64.phis[-1]), 3),
                "cg_solution_rel_err": rel_err(cg.x, cg64.x),
            }
    return out


def _dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def bench_external(name: str, cfg: DNNConfig, pdfs: int, device: torch.device, s: dict, clock: Clock) -> dict:
    """curvlinops / BackPACK GGN products on the same data; agreement checked in IEEE fp32."""
    net = make_net(cfg, pdfs, device)
    x, t = make_frames(s["compare_frames"], net[0].in_features, pdfs, device, seed=6)
    layout = ParamLayout.from_module(net)
    v = torch.randn(layout.numel, device=device, generator=torch.Generator(device=device).manual_seed(7))
    prec = precisions(device)[0]
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    out: dict[str, Any] = {"frames": x.shape[0], "precision": prec}
    ours = GGNOperator(net, CE, [(x, t)], backend="sequential")
    ours_cold = GGNOperator(net, CE, [(x, t)], backend="sequential", cache=False)
    fns["asr_hf_sequential"] = ours.matvec
    fns["asr_hf_sequential_cold"] = ours_cold.matvec
    try:
        from curvlinops import GGNLinearOperator

        cl = GGNLinearOperator(net, nn.CrossEntropyLoss(reduction="mean"), layout.params, [(x, t)],
                               check_deterministic=False)  # fmt: skip
        fns["curvlinops"] = lambda w: cl @ w
        out["curvlinops_version"] = _dist_version("curvlinops-for-pytorch")
    except ImportError as exc:
        out["curvlinops"] = {"result": None, "reason": "not installed", "detail": str(exc)}
    try:
        from backpack.hessianfree.ggnvp import ggn_vector_product_from_plist

        def bp(w: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                z = net(x)
                loss = F.cross_entropy(z, t)
                res = ggn_vector_product_from_plist(loss, z, layout.params, layout.unflatten(w))
            return layout.flatten([r.detach() for r in res])

        fns["backpack"] = bp
        out["backpack_version"] = _dist_version("backpack-for-pytorch")
    except ImportError as exc:
        out["backpack"] = {"result": None, "reason": "not installed", "detail": str(exc)}
    with tf32_matmuls(False, device):
        ref = fns["asr_hf_sequential"](v)
    for key, fn in fns.items():
        res: dict[str, Any] = {}
        try:
            with tf32_matmuls(False, device):
                res["rel_err_vs_asr_hf_ieee_fp32"] = rel_err(fn(v), ref)
            with peak_memory(device, res), in_precision(prec, device):
                sec = clock.time(lambda: fn(v), s["repeats"])
            res.update(seconds=rnd(sec), products_per_s=rnd(1 / sec))
        except Exception as exc:  # an external library's failure is a result, not a crash
            res = {"result": None, "reason": f"{type(exc).__name__}: {exc}"}
        out[key] = res
    base = out["asr_hf_sequential"].get("seconds")
    if base:
        out["time_ratio_vs_asr_hf_sequential"] = {
            k: rnd(out[k]["seconds"] / base, 3) for k in fns if out[k].get("seconds")
        }
    return out


def bench_hf(name: str, cfg: DNNConfig, pdfs: int, device: torch.device, s: dict, clock: Clock) -> dict:
    train = make_frameset(s["hf_train_frames"], cfg.context, pdfs, device, s["utt_frames"], seed=8)
    held = make_frameset(s["hf_heldout_frames"], cfg.context, pdfs, device, s["utt_frames"], seed=9)
    net = make_net(cfg, pdfs, device)
    n = len(train)
    opt = build_optimizer(
        "hf_lbfgs_sampled", net, CE,
        grad_initial=1.0, grad_max_fraction=1.0,  # gradient on every training frame
        curv_initial=min(1.0, s["hf_curv_frames"] / n), curv_growth=1.0, curv_max_fraction=1.0,
        curv_max_size=s["hf_curv_frames"],
        cg_max_iters=s["cg_iters"], cg_progress_tol=0.0,  # progress test off: up to cg_iters products
        initial_damping=1.0, seed=0,
    )  # fmt: skip
    data = SampledData(train=train, heldout=held)
    out: dict[str, Any] = {"train_frames": n, "heldout_frames": len(held), "chunk_size": opt.chunk_size,
                           "tf32": bool(opt.config.tf32 and device.type == "cuda"), "iterations": []}  # fmt: skip
    keys = ("wall_time", "time_gradient", "time_cg", "time_heldout", "cg_iters", "heldout_evals", "grad_samples",
            "curv_samples", "accepted", "heldout_loss_before", "heldout_loss", "rho", "lambda")  # fmt: skip
    with peak_memory(device, out):
        for _ in range(s["hf_iters"]):
            clock.sync()
            st = opt.step(data)
            clock.sync()
            it = {k: rnd(float(st[k])) for k in keys}
            it["gradient_frames_per_s"] = rnd(st["grad_samples"] / st["time_gradient"])
            it["cg_products_per_s"] = rnd(st["cg_iters"] / st["time_cg"]) if st["cg_iters"] else None
            out["iterations"].append(it)
    return out


def bench_sgd(name: str, cfg: DNNConfig, pdfs: int, device: torch.device, s: dict, clock: Clock,
              frames: FrameSet) -> dict:  # fmt: skip
    out: dict[str, Any] = {}
    for batch in (256, 1024):
        for prec in precisions(device):
            torch.manual_seed(0)
            model = DNN(FEAT_DIM, pdfs, cfg).to(device)
            opt = build_optimizer("sgd", model, CE, lr=0.01, momentum=0.9)
            gen = torch.Generator().manual_seed(0)
            res: dict[str, Any] = {}

            def closure_for(x: torch.Tensor, y: torch.Tensor):
                def closure() -> torch.Tensor:
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    return loss

                return closure

            def epochs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                while True:  # as many shuffled epochs as the steps need
                    yield from frames.minibatches(batch, gen)

            with peak_memory(device, res), in_precision(prec, device):
                it = epochs()
                for _ in range(3):  # warm-up
                    opt.step(closure_for(*next(it)))
                clock.sync()
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), device=device)
                for _ in range(s["sgd_steps"]):
                    x, y = next(it)
                    loss_sum += opt.step(closure_for(x, y)).detach()
                clock.sync()
                sec = time.perf_counter() - t0
            res.update(frames_per_s=rnd(s["sgd_steps"] * batch / sec), steps_per_s=rnd(s["sgd_steps"] / sec),
                       mean_loss=rnd(float(loss_sum) / s["sgd_steps"]))  # fmt: skip
            out[f"batch_{batch}_{prec}"] = res
    return out


def bench_loading(frames: FrameSet, device: torch.device, s: dict, clock: Clock, chunk: int) -> dict:
    out: dict[str, Any] = {"storage_device": str(frames.storage_device), "input_dim": frames.input_dim}
    n = len(frames)
    for key, batch in (("batch_256", 256), ("batch_1024", 1024), ("hf_chunk", chunk)):
        count = min(n, max(batch * 50, 100_000)) if key != "hf_chunk" else n
        res: dict[str, Any] = {"batch": batch}
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:count]
        with peak_memory(device, res):

            def run() -> None:
                for x, y in frames.batches(idx, batch):
                    pass

            sec = clock.time(run, max(1, s["repeats"] // 2))
        res.update(frames=count, frames_per_s=rnd(count / sec))
        out[key] = res
    return out


# ----------------------------------------------------------------------------- driver


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every section for every net, within ``args.budget_s``; returns the JSON record."""
    start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.init()
    torch.manual_seed(0)
    sizes = dict(TINY if args.tiny else FULL)
    for key in sizes:
        if getattr(args, key, None):
            sizes[key] = int(getattr(args, key))
    clock = Clock(device)
    compile_on = args.compile if args.compile is not None else device.type == "cuda"
    result: dict[str, Any] = {
        "bench": "gpu",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "tiny": bool(args.tiny),
        "sizes": sizes,
        "peak_flops_reference": {"h200_tf32_dense": PEAK_FLOPS["tf32"], "h200_fp32": PEAK_FLOPS["fp32"]},
        "flop_count": "analytic from weight shapes, multiply-add = 2: gradient 6P - 2P_1 per frame, "
                      "GGN product (cached forward) 8P - 4P_1 per frame (P: Linear weights, P_1: first layer's)",
        "nets": {},
        "skipped": [],
        "errors": [],
    }  # fmt: skip
    nets = [n for n in args.nets.split(",") if n]
    configs = {n: model_config(n, args.tiny) for n in nets}
    for n, (cfg, pdfs) in configs.items():
        with torch.device("meta"):  # shapes only
            net = DNN(FEAT_DIM, pdfs, cfg).net
        result["nets"][n] = {
            "shape": f"{FEAT_DIM * (2 * cfg.context + 1)}-{cfg.num_layers}x{cfg.hidden_dim}-{pdfs} {cfg.activation}",
            "params": sum(p.numel() for p in net.parameters()),
        }
        del net
    frames_cache: dict[str, FrameSet] = {}

    def sgd_frames(n: str) -> FrameSet:
        if n not in frames_cache:
            cfg, pdfs = configs[n]
            frames_cache.clear()
            frames_cache[n] = make_frameset(max(sizes["hf_train_frames"] // 4, 20_000), cfg.context, pdfs, device,
                                            sizes["utt_frames"], seed=10)  # fmt: skip
        return frames_cache[n]

    def task(n: str, section: str) -> Callable[[], dict]:
        cfg, pdfs = configs[n]
        if section == "gradient":
            return lambda: bench_gradient(n, cfg, pdfs, device, sizes, clock)
        if section == "ggn_product":
            return lambda: bench_ggn(n, cfg, pdfs, device, sizes, clock)
        if section == "hf_iteration":
            return lambda: bench_hf(n, cfg, pdfs, device, sizes, clock)
        if section == "sgd":
            return lambda: bench_sgd(n, cfg, pdfs, device, sizes, clock, sgd_frames(n))
        if section == "loading":
            with torch.device("meta"):
                chunk = auto_chunk_size(DNN(FEAT_DIM, pdfs, cfg).net, device)
            return lambda: bench_loading(sgd_frames(n), device, sizes, clock, chunk)
        if section == "precision":
            return lambda: bench_precision(n, cfg, pdfs, device, sizes, clock)
        if section == "external":
            return lambda: bench_external(n, cfg, pdfs, device, sizes, clock)
        if section == "compile":
            return lambda: bench_ggn(n, cfg, pdfs, device, sizes, clock, compile=True)
        raise KeyError(section)

    core = ["gradient", "ggn_product", "hf_iteration", "sgd", "loading"]
    extra = ["precision", "external"] + (["compile"] if compile_on else [])
    plan = [(n, sec) for n in nets for sec in core] + [(n, sec) for n in nets for sec in extra]
    if not compile_on:
        result["skipped"] += [{"net": n, "section": "compile", "reason": "off (CUDA default; --compile)"} for n in nets]
    for n, sec in plan:
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_s:
            result["skipped"].append({"net": n, "section": sec, "reason": f"time budget ({args.budget_s:.0f} s) spent"})
            continue
        t0 = time.perf_counter()
        try:
            res = task(n, sec)()
        except Exception as exc:  # record and go on: one failing section must not lose the others
            res = {"error": f"{type(exc).__name__}: {exc}"}
            result["errors"].append({"net": n, "section": sec, "error": res["error"],
                                     "trace": traceback.format_exc(limit=3)[-800:]})  # fmt: skip
        res["section_s"] = rnd(time.perf_counter() - t0)
        result["nets"][n][sec] = res
        release(device)
    for n in nets:  # loading vs training frames/s at equal batch sizes
        r = result["nets"][n]
        if "loading" in r and "sgd" in r:
            prec = precisions(device)[0]
            cmp = {}
            for batch in (256, 1024):
                load = r["loading"].get(f"batch_{batch}", {}).get("frames_per_s")
                train = r["sgd"].get(f"batch_{batch}_{prec}", {}).get("frames_per_s")
                if load and train:
                    cmp[f"batch_{batch}"] = {"loading_frames_per_s": load, "sgd_frames_per_s": train,
                                             "loading_share_of_step": rnd(train / load, 3)}  # fmt: skip
            grad = r.get("gradient", {}).get(prec, {}).get("frames_per_s")
            if grad:
                load = r["loading"].get("hf_chunk", {}).get("frames_per_s")
                if load:
                    cmp["hf_chunk"] = {"loading_frames_per_s": load, "gradient_frames_per_s": grad,
                                       "loading_share_of_gradient": rnd(grad / load, 3)}  # fmt: skip
            r["loading_vs_training"] = cmp
    result["elapsed_s"] = rnd(time.perf_counter() - start)
    return result


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="small nets and sizes (CPU smoke run)")
    ap.add_argument("--nets", default="dnn_bn50,dnn_swb300")
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip the remaining sections after this many s")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time torch.compile'd products (default: on CUDA only)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--out", default="", help="also write the JSON record here")
    for key, value in FULL.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=0, help=f"override (full: {value})")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    line = json.dumps(result)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
