#!/usr/bin/env python3
"""Plain-PyTorch peer of mla4j's sparse attention on the bench_sparse shapes.

Keys are bf16 rows (the FP8 rows of the mla4j benchmark, dequantised: PyTorch has no fused
FP8 gather); per call: gather each query's selected rows (index_select), S = q K^T (bmm),
softmax, O = P V (bmm, V = the first d_v dims), in bf16 as a PyTorch user would write it.
torch.cuda.Event timing, warm-up, median. Prints one row per shape and "RESULT torch ..."
lines (FLOP counted as bench_sparse counts them).
"""
import argparse
import statistics

import torch

CEILING_TFLOPS = 790.0

# name, prefill, b, s_q, h_q, d_qk, d_v, topk, slots, extra_topk, extra_slots
ROWS = [
    ("decode V32 b128 s_q2 h128 topk2048", False, 128, 2, 128, 576, 512, 2048, 8192, 0, 0),
    ("decode MODEL1 b128 s_q2 h64 topk128+512", False, 128, 2, 64, 512, 512, 128, 4096, 512, 2048),
    ("decode V32 b148 s_q2 h128 topk16384", False, 148, 2, 128, 576, 512, 16384, 32768, 0, 0),
    ("decode bf16 b128 s_q2 h128 topk2048", False, 128, 2, 128, 576, 512, 2048, 8192, 0, 0),
    ("prefill d576 s_q4096 s_kv32768 h128 topk2048", True, 4096, 1, 128, 576, 512, 2048, 32768, 0, 0),
    ("prefill d512 s_q4096 s_kv32768 h128 topk2048", True, 4096, 1, 128, 512, 512, 2048, 32768, 0, 0),
]


def attend(q, kv, idx, d_v, scale, chunk):
    """q [U, h, d], kv [N, d], idx [U, k] -> [U, h, d_v], in chunks of `chunk` units."""
    outs = []
    for u0 in range(0, q.shape[0], chunk):
        qc, ic = q[u0:u0 + chunk], idx[u0:u0 + chunk]
        k = kv[ic]                                          # gather: [u, k, d]
        s = torch.bmm(qc, k.transpose(1, 2)) * scale        # [u, h, k]
        p = torch.softmax(s, dim=-1)
        outs.append(torch.bmm(p, k[:, :, :d_v]))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_sparse: no CUDA device")
        return
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    print(f"torch_sparse on {torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    print(f"{'sparse op, shape (PyTorch, bf16 rows)':46s} {'us':>10s} {'TFLOP/s':>9s} {'of 790':>8s}")
    for name, prefill, b, s_q, h_q, d_qk, d_v, topk, slots, etopk, eslots in ROWS:
        if args.quick and "16384" in name:
            continue
        units = b * s_q
        n_keys = slots if prefill else b * slots
        kv = torch.rand(n_keys + b * eslots, d_qk, device=dev, dtype=torch.bfloat16, generator=gen) * 2 - 1
        q = torch.rand(units, h_q, d_qk, device=dev, dtype=torch.bfloat16, generator=gen) * 2 - 1
        base = torch.zeros(units, 1, dtype=torch.int64, device=dev)
        if not prefill:
            base = (torch.arange(units, device=dev) // s_q * slots).unsqueeze(1)
        idx = torch.randint(0, slots, (units, topk), device=dev, generator=gen) + base
        if etopk:
            ebase = n_keys + (torch.arange(units, device=dev) // s_q * eslots).unsqueeze(1)
            idx = torch.cat([idx, torch.randint(0, eslots, (units, etopk), device=dev, generator=gen) + ebase], 1)
        scale = d_qk ** -0.5
        # Chunks keep the gathered keys and scores within a few GB.
        per_unit = (topk + etopk) * (d_qk * 2 + h_q * 4)
        chunk = max(1, min(units, (8 << 30) // per_unit))
        for _ in range(2):
            attend(q, kv, idx, d_v, scale, chunk)
        times = []
        for _ in range(args.runs):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            attend(q, kv, idx, d_v, scale, chunk)
            e1.record()
            torch.cuda.synchronize()
            times.append(e0.elapsed_time(e1) * 1000.0)
        us = statistics.median(times)
        tflops = 2.0 * h_q * (d_qk + d_v) * units * (topk + etopk) / (us * 1e-6) / 1e12
        print(f"{name:46s} {us:10.1f} {tflops:9.1f} {100 * tflops / CEILING_TFLOPS:7.1f}%")
        print(f'RESULT torch name="{name}" us={us:.1f} tflops={tflops:.1f}')
        del kv, q, idx
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
