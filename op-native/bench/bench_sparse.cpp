// Benchmark of the sparse attention ops on a CUDA device: mla_sparse_decode over FP8 V32,
// FP8 MODEL1 (with an extra key set) and BF16 caches, and mla_sparse_prefill_fwd at d_qk 576
// and 512, the shapes of docs/perf.md's targets. CUDA events around each call, warm-up first,
// the median of the runs. FLOP = 2 h_q (d_qk + d_v) per attended (query, key) pair, counting
// every index entry (as the peers' figures do). Each row prints the time, TFLOP/s, the
// fraction of the 790 TFLOP/s ceiling and FlashMLA's figure on the same card where one exists
// (FlashMLA is not on the host; the figures are from shared measurements), and a "RESULT"
// line for run_gpu.sh's combined table.
//   bench_sparse [--runs N] [--quick] [--only SUBSTRING] [--impl NAME]
#include <mla/mla.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

const double kCeilingTflops = 790.0;

#define CHECK(call)                                                                                        \
    do {                                                                                                   \
        mla_status _s = (call);                                                                            \
        if (_s != MLA_OK) {                                                                                \
            std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, mla_last_error());  \
            std::exit(1);                                                                                  \
        }                                                                                                  \
    } while (0)

struct Row {
    const char *name;
    bool prefill;
    int kind;                 // decode: cache kind of both key sets
    int64_t b, s_q, h_q, d_qk, d_v;
    int64_t topk, slots;      // per request (decode) / s_kv (prefill)
    int64_t block_size;
    int64_t extra_topk, extra_slots, extra_block_size;
    double flashmla_us;       // 0: no peer figure
};

const Row kRows[] = {
    {"decode V32 b128 s_q2 h128 topk2048", false, MLA_CACHE_V32, 128, 2, 128, 576, 512, 2048, 8192, 64, 0, 0, 0, 400},
    {"decode MODEL1 b128 s_q2 h64 topk128+512", false, MLA_CACHE_MODEL1, 128, 2, 64, 512, 512, 128, 4096, 256,
     512, 2048, 64, 117},
    {"decode V32 b148 s_q2 h128 topk16384", false, MLA_CACHE_V32, 148, 2, 128, 576, 512, 16384, 32768, 64, 0, 0,
     0, 3099},
    {"decode bf16 b128 s_q2 h128 topk2048", false, MLA_CACHE_PLAIN, 128, 2, 128, 576, 512, 2048, 8192, 64, 0, 0,
     0, 0},
    {"prefill d576 s_q4096 s_kv32768 h128 topk2048", true, MLA_CACHE_PLAIN, 4096, 1, 128, 576, 512, 2048, 32768,
     1, 0, 0, 0, 3840},
    {"prefill d512 s_q4096 s_kv32768 h128 topk2048", true, MLA_CACHE_PLAIN, 4096, 1, 128, 512, 512, 2048, 32768,
     1, 0, 0, 0, 3746},
};

uint16_t bf16_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

void *device_copy(const void *host, int64_t bytes) {
    void *d = nullptr;
    CHECK(mla_cuda_malloc(&d, bytes));
    CHECK(mla_cuda_memcpy(d, host, bytes, MLA_COPY_HOST_TO_DEVICE));
    return d;
}

// Random bf16 values in [-1, 1), n elements, as device memory (a host pattern copied over).
void *random_bf16(int64_t n, std::mt19937_64 &rng) {
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    const int64_t pat = std::min<int64_t>(n, int64_t(1) << 22);
    std::vector<uint16_t> host(static_cast<size_t>(pat));
    for (auto &x : host) x = bf16_bits(uni(rng));
    void *d = nullptr;
    CHECK(mla_cuda_malloc(&d, n * 2));
    for (int64_t at = 0; at < n; at += pat)
        CHECK(mla_cuda_memcpy(static_cast<uint16_t *>(d) + at, host.data(), std::min(pat, n - at) * 2,
                              MLA_COPY_HOST_TO_DEVICE));
    return d;
}

// An FP8 cache of num_blocks blocks: a quantised random pattern of 32 blocks repeated.
void *random_fp8(int kind, int64_t num_blocks, int64_t block_size, int64_t d_qk, std::mt19937_64 &rng) {
    const int64_t pat_blocks = std::min<int64_t>(num_blocks, 32);
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    std::vector<float> vals(size_t(pat_blocks * block_size * d_qk));
    for (auto &x : vals) x = uni(rng);
    const int64_t bb = mla_cache_block_bytes(kind, block_size, 0, 0, 0);
    std::vector<uint8_t> bytes(size_t(pat_blocks * bb));
    mla_quant_params qp;
    std::memset(&qp, 0, sizeof qp);
    qp.dtype = MLA_FLOAT32;
    qp.kv = vals.data();
    qp.cache.kind = kind;
    qp.cache.data = bytes.data();
    qp.cache.num_blocks = pat_blocks;
    qp.cache.block_size = block_size;
    qp.cache.h_kv = 1;
    qp.cache_out = bytes.data();
    qp.exec.device = -1;
    CHECK(mla_kv_quantize(&qp));
    void *d = nullptr;
    CHECK(mla_cuda_malloc(&d, num_blocks * bb));
    for (int64_t at = 0; at < num_blocks; at += pat_blocks)
        CHECK(mla_cuda_memcpy(static_cast<uint8_t *>(d) + at * bb, bytes.data(),
                              std::min(pat_blocks, num_blocks - at) * bb, MLA_COPY_HOST_TO_DEVICE));
    return d;
}

// topk distinct slots per query (unit) from its request's own range of `slots` slots.
void *random_indices(int64_t requests, int64_t per_request, int64_t topk, int64_t slots, std::mt19937_64 &rng) {
    std::vector<int32_t> idx(size_t(requests * per_request * topk));
    std::vector<int32_t> pool(static_cast<size_t>(slots));
    for (int64_t r = 0; r < requests; ++r)
        for (int64_t j = 0; j < per_request; ++j) {
            for (int64_t s = 0; s < slots; ++s) pool[size_t(s)] = int32_t(s);
            for (int64_t e = 0; e < topk; ++e) {  // partial Fisher-Yates
                const int64_t k = e + int64_t(rng() % uint64_t(slots - e));
                std::swap(pool[size_t(e)], pool[size_t(k)]);
                idx[size_t((r * per_request + j) * topk + e)] = int32_t(r * slots + pool[size_t(e)]);
            }
        }
    return device_copy(idx.data(), int64_t(idx.size() * 4));
}

double run_row(const Row &row, int runs, const char *impl, void *stream) {
    std::mt19937_64 rng(42);
    const int64_t b = row.b, s_q = row.s_q, h_q = row.h_q, d_qk = row.d_qk, d_v = row.d_v;
    void *q = random_bf16(b * s_q * h_q * d_qk, rng);
    void *out = nullptr, *lse = nullptr, *mx = nullptr, *ws = nullptr;
    CHECK(mla_cuda_malloc(&out, b * s_q * h_q * d_v * 2));
    CHECK(mla_cuda_malloc(&lse, b * s_q * h_q * 4));
    CHECK(mla_cuda_malloc(&mx, b * s_q * h_q * 4));
    std::vector<void *> owned = {q, out, lse, mx};
    mla_sparse_decode_params dp;
    mla_sparse_prefill_params pp;
    std::memset(&dp, 0, sizeof dp);
    std::memset(&pp, 0, sizeof pp);
    int64_t ws_bytes = 0;
    const float scale = float(1.0 / std::sqrt(double(d_qk)));
    if (row.prefill) {
        void *kv = random_bf16(row.slots * d_qk, rng);
        void *idx = random_indices(b, 1, row.topk, row.slots, rng);
        owned.push_back(kv);
        owned.push_back(idx);
        pp.dtype = MLA_BFLOAT16;
        pp.s_q = b;
        pp.s_kv = row.slots;
        pp.h_q = h_q;
        pp.h_kv = 1;
        pp.d_qk = d_qk;
        pp.d_v = d_v;
        pp.topk = row.topk;
        pp.q = q;
        pp.q_stride[0] = h_q * d_qk;
        pp.q_stride[1] = d_qk;
        pp.kv = kv;
        pp.kv_stride[0] = pp.kv_stride[1] = d_qk;
        pp.indices = static_cast<const int32_t *>(idx);
        pp.indices_stride[0] = pp.indices_stride[1] = row.topk;
        pp.softmax_scale = scale;
        pp.out = out;
        pp.out_stride[0] = h_q * d_v;
        pp.out_stride[1] = d_v;
        pp.lse = static_cast<float *>(lse);
        pp.max_logit = static_cast<float *>(mx);
        pp.exec.device = 0;
        pp.exec.stream = stream;
        pp.exec.implementation = impl;
        ws_bytes = mla_sparse_prefill_fwd_workspace_size(&pp);
    } else {
        dp.dtype = MLA_BFLOAT16;
        dp.b = b;
        dp.s_q = s_q;
        dp.h_q = h_q;
        dp.d_qk = d_qk;
        dp.d_v = d_v;
        dp.q = q;
        dp.q_stride[0] = s_q * h_q * d_qk;
        dp.q_stride[1] = h_q * d_qk;
        dp.q_stride[2] = d_qk;
        auto set = [&](mla_sparse_keys *k, int64_t topk, int64_t slots, int64_t bs) {
            const int64_t num_blocks = b * slots / bs;
            k->cache.kind = row.kind;
            k->cache.num_blocks = num_blocks;
            k->cache.block_size = bs;
            k->cache.h_kv = 1;
            if (row.kind == MLA_CACHE_PLAIN) {
                k->cache.dtype = MLA_BFLOAT16;
                k->cache.data = random_bf16(num_blocks * bs * d_qk, rng);
                k->cache.token_stride = k->cache.head_stride = d_qk;
                k->cache.block_stride = bs * d_qk;
            } else {
                k->cache.data = random_fp8(row.kind, num_blocks, bs, d_qk, rng);
            }
            owned.push_back(const_cast<void *>(k->cache.data));
            void *idx = random_indices(b, s_q, topk, slots, rng);
            owned.push_back(idx);
            k->indices = static_cast<const int32_t *>(idx);
            k->topk = topk;
            k->indices_stride[0] = s_q * topk;
            k->indices_stride[1] = topk;
        };
        set(&dp.keys, row.topk, row.slots, row.block_size);
        if (row.extra_topk) set(&dp.extra, row.extra_topk, row.extra_slots, row.extra_block_size);
        dp.softmax_scale = scale;
        dp.out = out;
        dp.out_stride[0] = s_q * h_q * d_v;
        dp.out_stride[1] = h_q * d_v;
        dp.out_stride[2] = d_v;
        dp.lse = static_cast<float *>(lse);
        dp.exec.device = 0;
        dp.exec.stream = stream;
        dp.exec.implementation = impl;
        ws_bytes = mla_sparse_decode_workspace_size(&dp);
    }
    if (ws_bytes < 0) {
        std::fprintf(stderr, "%s: workspace query failed: %s\n", row.name, mla_last_error());
        std::exit(1);
    }
    CHECK(mla_cuda_malloc(&ws, std::max<int64_t>(ws_bytes, 16)));
    owned.push_back(ws);
    mla_plan_info plan;
    if (row.prefill) {
        pp.exec.workspace = ws;
        pp.exec.workspace_bytes = ws_bytes;
        CHECK(mla_sparse_prefill_fwd_plan(&pp, &plan));
    } else {
        dp.exec.workspace = ws;
        dp.exec.workspace_bytes = ws_bytes;
        CHECK(mla_sparse_decode_plan(&dp, &plan));
    }
    auto call = [&] { CHECK(row.prefill ? mla_sparse_prefill_fwd(&pp) : mla_sparse_decode(&dp)); };
    void *e0 = nullptr, *e1 = nullptr;
    CHECK(mla_cuda_event_create(&e0));
    CHECK(mla_cuda_event_create(&e1));
    for (int i = 0; i < 3; ++i) call();
    std::vector<float> ms;
    for (int i = 0; i < runs; ++i) {
        CHECK(mla_cuda_event_record(e0, stream));
        call();
        CHECK(mla_cuda_event_record(e1, stream));
        CHECK(mla_cuda_event_synchronize(e1));
        float t = 0;
        CHECK(mla_cuda_event_elapsed_ms(e0, e1, &t));
        ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double us = 1000.0 * ms[ms.size() / 2];
    const double pairs = double(b) * double(s_q) * double(row.topk + row.extra_topk);
    const double tflops = 2.0 * double(h_q) * double(d_qk + d_v) * pairs / (us * 1e-6) / 1e12;
    char peer[64] = "-";
    if (row.flashmla_us > 0)
        std::snprintf(peer, sizeof peer, "%8.1f %6.2fx", row.flashmla_us, row.flashmla_us / us);
    std::printf("%-46s %-12s %9.1f %8.1f %6.1f%%  %s\n", row.name, plan.implementation, us, tflops,
                100.0 * tflops / kCeilingTflops, peer);
    std::printf("RESULT sparse name=\"%s\" impl=%s us=%.1f tflops=%.1f\n", row.name, plan.implementation, us,
                tflops);
    CHECK(mla_cuda_event_destroy(e0));
    CHECK(mla_cuda_event_destroy(e1));
    CHECK(mla_cuda_stream_synchronize(stream));
    for (void *p : owned) mla_cuda_free(p);
    return us;
}

}  // namespace

int main(int argc, char **argv) {
    int runs = 20;
    const char *only = nullptr, *impl = nullptr;
    bool quick = false;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
        if (!std::strcmp(argv[i], "--quick")) quick = true;
        if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        if (!std::strcmp(argv[i], "--impl") && i + 1 < argc) impl = argv[++i];
    }
    if (mla_cuda_device_count() == 0) {
        std::printf("bench_sparse: no CUDA device (library targets %s)\n", mla_build_targets());
        return 0;
    }
    if (quick) runs = std::min(runs, 10);
    CHECK(mla_cuda_set_device(0));
    void *stream = nullptr;
    CHECK(mla_cuda_stream_create(&stream));
    std::printf("%-46s %-12s %9s %8s %7s  %s\n", "sparse op, shape (bf16 q)", "impl", "us", "TFLOP/s", "of 790",
                "FlashMLA us, ratio");
    for (const Row &row : kRows) {
        if (only && !std::strstr(row.name, only)) continue;
        if (quick && std::strstr(row.name, "16384")) continue;
        run_row(row, runs, impl, stream);
    }
    CHECK(mla_cuda_stream_destroy(stream));
    return 0;
}
