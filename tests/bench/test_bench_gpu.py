"""Smoke test of ``bench/bench_gpu.py``: its entry function on CPU with tiny sizes returns
the record the GPU run will print (every section, no errors)."""

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_cpu_tiny_record(tmp_path) -> None:
    bench = _load()
    threads = torch.get_num_threads()
    out = tmp_path / "bench_gpu.json"
    args = bench.parse_args(
        ["--device", "cpu", "--tiny", "--out", str(out), "--grad-frames", "512", "--curv-frames", "256",
         "--compare-frames", "128", "--hf-train-frames", "3000", "--hf-heldout-frames", "300",
         "--hf-curv-frames", "200", "--cg-iters", "3", "--sgd-steps", "2", "--repeats", "1"]
    )  # fmt: skip
    try:
        torch.set_num_threads(1)
        rec = bench.run(args)
    finally:
        torch.set_num_threads(threads)
    json.dumps(rec)  # one JSON line
    assert rec["bench"] == "gpu" and rec["errors"] == []
    assert set(rec["nets"]) == {"dnn_bn50", "dnn_swb300"}
    for net in rec["nets"].values():
        for section in ("gradient", "ggn_product", "hf_iteration", "sgd", "loading", "precision", "external",
                        "loading_vs_training"):  # fmt: skip
            assert section in net, section
        assert net["gradient"]["fp32"]["frames_per_s"] > 0 and "tf32" not in net["gradient"]  # CUDA only
        ggn = net["ggn_product"]
        assert ggn["fp32"]["products_per_s"] > 0 and ggn["peak_mem_bytes"] is None
        assert 0 < ggn["cache_bytes"] < ggn["cache_bytes_if_s_prime_cached"]
        assert net["hf_iteration"]["iterations"][0]["cg_iters"] == 3
        assert net["precision"]["fp32"]["product_rel_err"] < 1e-5
        for lib in ("curvlinops", "backpack"):  # optional: timed and checked, or null with a reason
            res = net["external"][lib]
            assert res.get("rel_err_vs_asr_hf_ieee_fp32", 0) < 1e-5 if "seconds" in res else res["reason"]
        assert {"batch_256_fp32", "batch_1024_fp32"} <= set(net["sgd"])
    assert {s["section"] for s in rec["skipped"]} == {"compile"}  # torch.compile: CUDA-only by default
    bench.main(["--device", "cpu", "--tiny", "--nets", "", "--out", str(out)])
    assert json.loads(out.read_text())["nets"] == {}
