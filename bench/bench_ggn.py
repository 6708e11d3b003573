"""GGN-vector product time on a DNN of the papers' size, side by side.

Network: ``inputs - layers x hidden sigmoid - outputs`` softmax cross-entropy (default
360 - 6 x 1024 - 2000, the BN-50 acoustic model of Kingsbury et al. 2012 / Sainath et
al. 2013), one batch of ``batch`` frames (default 4096), float32.

Methods (all compute the same ``G v = (1/N) sum_n J_n^T H_n J_n v``; checked against
each other):

* ``asr_hf_sequential``: this package's hand-written R-operator; forward pass cached
  per operator (the situation inside a CG run: many products at one theta);
* ``asr_hf_sequential_cold``: the same without the cache (forward pass in every product);
* ``asr_hf_func``: this package's generic path, ``torch.func.jvp`` + cached ``torch.func.vjp``;
* ``double_backward``: the double-backward R-operator trick through autograd, forward
  graph retained across products;
* ``curvlinops``: ``curvlinops.GGNLinearOperator`` (``torch.func`` jvp + vjp, recomputes
  the forward pass in every product by design);
* ``backpack``: ``backpack.hessianfree.ggnvp.ggn_vector_product`` (R-op / L-op by double
  backward), forward graph retained across products.

The external libraries are optional (``pip install -r bench/requirements.txt``); a
missing one is reported as skipped.  Timings are medians over ``--repeats`` rounds in
which every method runs once (interleaved, so load changes hit all methods alike).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_hf.optim.base import LossKind  # noqa: E402
from asr_hf.optim.curvature import GGNOperator  # noqa: E402
from asr_hf.optim.layout import ParamLayout  # noqa: E402


def build(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = args.inputs
    for _ in range(args.layers):
        layers += [nn.Linear(width, args.hidden), nn.Sigmoid()]
        width = args.hidden
    layers.append(nn.Linear(width, args.outputs))
    model = nn.Sequential(*layers).to(device=device, dtype=dtype)
    x = torch.randn(args.batch, args.inputs, device=device, dtype=dtype)
    t = torch.randint(0, args.outputs, (args.batch,), device=device)
    return model, x, t


def methods(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    layout = ParamLayout.from_module(model)
    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    kind = LossKind.CROSS_ENTROPY
    ours = GGNOperator(model, kind, [(x, t)], backend="sequential")
    out["asr_hf_sequential"] = ours.matvec
    cold = GGNOperator(model, kind, [(x, t)], backend="sequential", cache=False)
    out["asr_hf_sequential_cold"] = cold.matvec
    func = GGNOperator(model, kind, [(x, t)], backend="func")
    out["asr_hf_func"] = func.matvec
    dbl = GGNOperator(model, kind, [(x, t)], backend="double_backward")
    out["double_backward"] = dbl.matvec
    try:
        from curvlinops import GGNLinearOperator

        cl = GGNLinearOperator(
            model, nn.CrossEntropyLoss(reduction="mean"), layout.params, [(x, t)], check_deterministic=False
        )
        out["curvlinops"] = lambda v: cl @ v
    except ImportError:
        pass
    try:
        from backpack.hessianfree.ggnvp import ggn_vector_product_from_plist

        z = model(x)
        loss = nn.functional.cross_entropy(z, t)

        def bp(v: torch.Tensor) -> torch.Tensor:
            res = ggn_vector_product_from_plist(loss, z, layout.params, layout.unflatten(v))
            return layout.flatten(res)

        out["backpack"] = bp
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small network (360-2x256-500, batch 512)")
    ap.add_argument("--inputs", type=int, default=360)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--outputs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.quick:
        args.hidden, args.layers, args.outputs, args.batch = 256, 2, 500, 512
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model, x, t = build(args, device, dtype)
    fns = methods(model, x, t)
    n = ParamLayout.from_module(model).numel
    v = torch.randn(n, device=device, dtype=dtype, generator=None)

    # correctness (and warm-up: the first call fills the forward caches)
    ref = fns["asr_hf_sequential"](v)
    rel_err = {}
    for name, fn in fns.items():
        got = fn(v)
        rel_err[name] = float((got - ref).norm() / ref.norm())
    sync()

    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn(v)
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["asr_hf_sequential"]
    result = {
        "bench": "ggn_vector_product",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "tf32": bool(args.tf32 and device.type == "cuda"),
        "net": f"{args.inputs}-{args.layers}x{args.hidden}-{args.outputs}",
        "batch": args.batch,
        "params": n,
        "repeats": args.repeats,
        "median_s": {k: round(s, 5) for k, s in med.items()},
        "time_ratio_vs_asr_hf_sequential": {k: round(s / base, 3) for k, s in med.items()},
        "rel_err_vs_asr_hf_sequential": {k: float(f"{e:.2e}") for k, e in rel_err.items()},
        "fastest": min(med, key=med.get),
        "skipped": sorted({"curvlinops", "backpack"} - set(fns)),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
