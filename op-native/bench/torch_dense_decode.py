#!/usr/bin/env python3
"""Plain-PyTorch peer of mla4j's dense decode on the bench_dense_decode shapes.

Paged bf16 cache [num_blocks, 64, 576]; per call: gather each request's rows through the block
table, S = q K^T (bmm), softmax (causal mask for s_q > 1), O = P V (bmm, V = first 512 dims),
all in bf16 as a PyTorch user would write it. torch.cuda.Event timing, warm-up, median; calls
rotate over input sets larger than the L2. Prints the same columns as bench_dense_decode and
"RESULT impl=torch ..." lines.
"""
import argparse
import math
import statistics

import torch

CEILING_TFLOPS = 790.0


def decode(q, cache, table, s_k, d_v, scale, causal):
    b, s_q, h_q, d_qk = q.shape
    k = cache[table].reshape(b, s_k, d_qk)              # gather: [b, s_k, d_qk]
    qf = q.reshape(b, s_q * h_q, d_qk)                  # rows: query-major, then head
    s = torch.bmm(qf, k.transpose(1, 2)) * scale        # [b, s_q*h_q, s_k]
    if causal and s_q > 1:
        j = torch.arange(s_q, device=q.device).repeat_interleave(h_q)
        t = torch.arange(s_k, device=q.device)
        s = s.masked_fill(t[None, :] > (s_k - s_q + j)[:, None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = torch.bmm(p, k[:, :, :d_v])                     # [b, s_q*h_q, d_v]
    return o.reshape(b, s_q, h_q, d_v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_dense_decode: no CUDA device")
        return
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    print(f"torch_dense_decode on {props.name}, torch {torch.__version__}, {args.runs} timed runs each")
    print(f"\n{'shape (bf16, block 64, PyTorch)':44s} {'us':>10s} {'TFLOP/s':>10s} {'GB/s':>10s} {'of 790':>9s}")
    b, h_q, d_qk, d_v, bs = 128, 128, 576, 512, 64
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    for s_q in (1, 2):
        for s_k in (4096, 8192, 16384):
            if args.quick and s_k != 8192:
                continue
            causal = s_q > 1
            nb = b * s_k // bs
            set_bytes = nb * bs * d_qk * 2
            n_sets = max(2, math.ceil(4 * l2 / set_bytes))
            sets = []
            for _ in range(n_sets):
                cache = torch.rand(nb, bs, d_qk, device=dev, dtype=torch.bfloat16, generator=gen) * 2 - 1
                table = torch.randperm(nb, device=dev, generator=gen).reshape(b, s_k // bs).to(torch.int64)
                q = torch.rand(b, s_q, h_q, d_qk, device=dev, dtype=torch.bfloat16, generator=gen) * 2 - 1
                sets.append((q, cache, table))
            scale = 1.0 / math.sqrt(d_qk)
            for i in range(3):
                q, cache, table = sets[i % n_sets]
                decode(q, cache, table, s_k, d_v, scale, causal)
            torch.cuda.synchronize()
            times = []
            for i in range(args.runs):
                q, cache, table = sets[i % n_sets]
                e0 = torch.cuda.Event(enable_timing=True)
                e1 = torch.cuda.Event(enable_timing=True)
                e0.record()
                decode(q, cache, table, s_k, d_v, scale, causal)
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1))
            sec = statistics.median(times) * 1e-3
            flop = sum(2.0 * h_q * ((s_k - s_q + j + 1) if causal else s_k) * (d_qk + d_v) * b
                       for j in range(s_q))
            nbytes = b * s_q * h_q * d_qk * 2 + b * s_k * d_qk * 2 + b * s_q * h_q * d_v * 2
            tflops, gbs = flop / sec * 1e-12, nbytes / sec * 1e-9
            name = f"b {b} s_q {s_q} h_q {h_q} d {d_qk}/{d_v} s_k {s_k}"
            print(f"{name:44s} {sec * 1e6:10.1f} {tflops:10.1f} {gbs:10.1f} {100 * tflops / CEILING_TFLOPS:8.1f}%")
            print(f"RESULT impl=torch s_q={s_q} s_k={s_k} us={sec * 1e6:.1f} tflops={tflops:.1f} gbs={gbs:.1f}", flush=True)
            del sets
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
