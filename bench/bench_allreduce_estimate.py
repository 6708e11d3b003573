"""Paper estimate: all-reduce cost of one CG product for the papers' networks, multi-node.

Data-parallel HF all-reduces one parameter-sized vector per curvature-vector product
(plus one for the gradient and a scalar pair per held-out loss).  This script puts
numbers on that for the papers' DNNs:

* BN-50 (Sainath et al. 2013): 9 x 40 log-mel inputs, 6 x 1024 sigmoid, ~2.2k states;
* SWB-300: 11 x 40 inputs, 6 x 2048 sigmoid, ~9.3k states;

with the bandwidth-optimal ring all-reduce model ``T = 2 (W-1)/W * bytes / B + 2 (W-1) a``
(``B`` link bandwidth, ``a`` per-message latency), against the compute time of the
worker's share of the curvature sample (1% of the training frames, Kingsbury et al. 2012;
a cached-forward GGN product costs ~8 P flops per frame: R-forward and backward, two
matrix products each per layer).  Interconnects and sustained compute rates are
stated assumptions (``--links``, ``--flops``), not measurements; ``--measure`` adds the
gloo all-reduce time of those vector sizes measured between local processes here.

    python bench/bench_allreduce_estimate.py [--workers 8,64] [--measure]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

NETWORKS = {
    # name: (input dim, hidden, layers, outputs, training hours)
    "bn50": (9 * 40, 1024, 6, 2220, 50),
    "swb300": (11 * 40, 2048, 6, 9300, 300),
}
FRAMES_PER_HOUR = 360_000  # 10 ms shift
LINKS = {  # name: (bandwidth bytes/s per direction, latency s)
    "10GbE": (1.25e9, 50e-6),
    "IB-EDR-100G": (12.5e9, 5e-6),
    "NVLink4-node": (450e9, 5e-6),  # within one 8-GPU node only
}
FLOPS = {"cpu-2core": 5e10, "gpu-fp32": 5e13, "gpu-tf32": 2e14}  # sustained, assumed


def num_params(inp: int, hidden: int, layers: int, out: int) -> int:
    dims = [inp] + [hidden] * layers + [out]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def ring_allreduce_s(nbytes: float, workers: int, bandwidth: float, latency: float) -> float:
    if workers <= 1:
        return 0.0
    return 2 * (workers - 1) / workers * nbytes / bandwidth + 2 * (workers - 1) * latency


def _measure_worker(rank: int, world: int, sizes: list[int], out: str) -> None:
    import torch

    from asr_hf.optim.distributed import DistReducer

    torch.set_num_threads(1)
    red = DistReducer()
    res = {}
    for n in sizes:
        v = torch.randn(n)
        red.all_reduce_(v)  # warm-up
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            red.all_reduce_(v)
            ts.append(time.perf_counter() - t0)
        res[str(n)] = statistics.median(ts)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(res, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="8,64")
    p.add_argument("--curv-fraction", type=float, default=0.01)
    p.add_argument("--measure", action="store_true", help="also time gloo all-reduce of these sizes, 2 local procs")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    sizes = {}
    for net, (inp, hid, layers, out, hours) in NETWORKS.items():
        params = num_params(inp, hid, layers, out)
        sizes[net] = params
        nbytes = 4 * params
        curv_frames = args.curv_fraction * hours * FRAMES_PER_HOUR
        for w in workers:
            for link, (bw, lat) in LINKS.items():
                if link.endswith("-node") and w > 8:  # one node holds at most 8 GPUs
                    continue
                comm = ring_allreduce_s(nbytes, w, bw, lat)
                for dev, rate in FLOPS.items():
                    compute = 8 * params * curv_frames / w / rate
                    rows.append({"net": net, "params": params, "workers": w, "link": link, "device": dev,
                                 "allreduce_ms": 1e3 * comm, "compute_ms": 1e3 * compute,
                                 "comm_share": comm / (comm + compute)})  # fmt: skip
    measured = None
    if args.measure:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
        from asr_hf.optim.distributed import run_local_workers

        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.json")
            run_local_workers(_measure_worker, 2, sorted(sizes.values()), out)
            with open(out) as f:
                by_size = json.load(f)
        measured = {net: {"params": n, "gloo_2proc_local_ms": 1e3 * by_size[str(n)]} for net, n in sizes.items()}
    print(f"{'net':7} {'W':>3} {'link':13} {'device':10} {'all-reduce ms':>13} {'compute ms':>10} {'comm %':>7}",
          file=sys.stderr)
    for r in rows:
        print(f"{r['net']:7} {r['workers']:>3} {r['link']:13} {r['device']:10} {r['allreduce_ms']:13.2f} "
              f"{r['compute_ms']:10.2f} {100 * r['comm_share']:7.1f}", file=sys.stderr)
    if measured:
        for net, m in measured.items():
            print(f"measured here: gloo all-reduce of {net}'s {m['params']} floats, 2 local processes: "
                  f"{m['gloo_2proc_local_ms']:.1f} ms", file=sys.stderr)
    print(json.dumps({"bench": "allreduce_estimate", "curv_fraction": args.curv_fraction, "links": LINKS,
                      "flops_assumed": FLOPS, "rows": rows, "measured": measured}))  # fmt: skip


if __name__ == "__main__":
    main()
