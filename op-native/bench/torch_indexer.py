#!/usr/bin/env python3
"""Plain-PyTorch peer of mla4j's lightning indexer on the bench_indexer shapes.

scores[b, t, s] = sum_j w[b, t, j] * relu(q[b, t, j] . k[b, s]) written as a PyTorch user
would: the dot products by einsum in bf16 (tensor cores), relu, times w and summed over the
heads in float32, the causal mask by masked_fill, then torch.topk. Query rows go in blocks so
that the [rows, h, s_k] intermediate stays near 4 GB (the whole prefill matrix would not fit).
FP8 inputs: the natural PyTorch route, dequantise to bf16 (values times row scales), then the
same. torch.cuda.Event timing, warm-up, median. Prints "RESULT impl=torch ..." lines with the
same keys as bench_indexer.
"""
import argparse
import statistics

import torch

H, D = 64, 128


def scores_of(q, k, w, causal):
    b, s_q, h, d = q.shape
    s_k = k.shape[1]
    out = torch.empty(b, s_q, s_k, device=q.device, dtype=torch.float32)
    block = max(1, min(s_q, (4 << 30) // max(1, b * h * s_k * 6)))
    for t0 in range(0, s_q, block):
        t1 = min(s_q, t0 + block)
        logits = torch.einsum("bthd,bsd->bths", q[:, t0:t1], k)           # bf16 [b, rows, h, s_k]
        sc = (logits.float().relu_() * w[:, t0:t1, :, None]).sum(dim=2)   # float32 [b, rows, s_k]
        if causal:
            t = torch.arange(t0, t1, device=q.device)[:, None]
            s = torch.arange(s_k, device=q.device)[None, :]
            sc.masked_fill_(s > t + s_k - s_q, float("-inf"))
        out[:, t0:t1] = sc
    return out


def timed(fn, runs):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_indexer: no CUDA device")
        return
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    print(f"torch_indexer on {props.name}, torch {torch.__version__}, {args.runs} timed runs each")
    shapes = []
    if args.only in ("", "decode"):
        for s_q in (1, 2):
            for s_k in (8192, 32768, 65536):
                if args.quick and s_k != 65536:
                    continue
                shapes.append(("decode", 128, s_q, s_k, 2048))
        shapes.append(("decode V4", 128, 1, 65536, 512))
    if args.only in ("", "prefill"):
        for s in (4096, 8192, 16384):
            if args.quick and s != 16384:
                continue
            shapes.append(("prefill", 1, s, s, 2048))
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    for kind, b, s_q, s_k, topk in shapes:
        for dtype in ("bf16", "fp8"):
            q = torch.rand(b, s_q, H, D, device=dev, generator=gen) * 2 - 1
            k = torch.rand(b, s_k, D, device=dev, generator=gen) * 2 - 1
            w = (torch.rand(b, s_q, H, device=dev, generator=gen) * 2 - 1) * 0.125
            if dtype == "fp8":
                q8, k8 = (q * 16).to(torch.float8_e4m3fn), (k * 16).to(torch.float8_e4m3fn)
                qs = torch.full((b, s_q, H), 1 / 16, device=dev)
                ks = torch.full((b, s_k), 1 / 16, device=dev)
                prep = lambda: ((q8.to(torch.bfloat16) * qs[..., None].to(torch.bfloat16)),
                                (k8.to(torch.bfloat16) * ks[..., None].to(torch.bfloat16)))
            else:
                qb, kb = q.to(torch.bfloat16), k.to(torch.bfloat16)
                prep = lambda: (qb, kb)
            del q, k
            torch.cuda.empty_cache()
            sc_fn = lambda: scores_of(*prep(), w, True)
            us_sc = timed(sc_fn, args.runs)
            us_tk = timed(lambda: torch.topk(sc_fn(), topk, dim=-1), args.runs)
            vis = sum(min(s_k, max(0, t + s_k - s_q + 1)) for t in range(s_q)) * b
            flop = 2.0 * H * D * vis
            for op, us in (("scores", us_sc), ("topk", us_tk)):
                tf = flop / (us * 1e-6) * 1e-12
                print(f"{kind} b {b} s_q {s_q} s_k {s_k} topk {topk} {dtype:5s} {op:7s} {us:10.1f} us {tf:8.1f} TFLOP/s")
                print(f"RESULT impl=torch kind={kind} dtype={dtype} op={op} b={b} s_q={s_q} s_k={s_k} topk={topk} "
                      f"us={us:.1f} tflops={tf:.1f}", flush=True)
            del prep, sc_fn
            torch.cuda.empty_cache()
    if args.only in ("", "topk"):
        for rows, n, k in ((128, 65536, 2048), (256, 65536, 2048), (128, 65536, 512), (16384, 16384, 2048),
                           (128, 65536, 16384)):
            if args.quick and rows == 256:
                continue
            s = torch.randn(rows, n, device=dev, generator=gen) * 4
            us = timed(lambda: torch.topk(s, k, dim=-1), args.runs)
            gbs = rows * (n * 4 + k * 8) / (us * 1e-6) * 1e-9
            print(f"top-k alone rows {rows} n {n} k {k} {us:10.1f} us {gbs:8.1f} GB/s")
            print(f"RESULT impl=torch op=topk-alone rows={rows} n={n} k={k} us={us:.1f} gbs={gbs:.1f}", flush=True)
            del s
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
