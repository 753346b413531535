// Benchmark of the lightning indexer and top-k on a CUDA device (ops.md section 6) at
// DeepSeek V3.2 / V4 sizes: h 64, d 128, q and k bf16 or float8_e4m3 (per-row float32
// scales), w float32.
//   decode:  b 128, s_q 1 and 2, s_k 8192 / 32768 / 65536, top-k 2048 (512: V4)
//   prefill: b 1, s_q = s_k = 4096 / 8192 / 16384, causal, top-k 2048
//   top-k alone: 128 rows of 65536, 16384 rows of 16384 (causal prefill rows are full here)
// CUDA events around each call, warm-up first, the median of the runs; the calls rotate over
// input sets that together are several times the L2. FLOP = 2 h d per (query, visible key);
// bytes = q + k + w + scores (the scores op) or q + k + w + indices (fused top-k). Fractions of
// the ceilings: 790 TFLOP/s bf16, 1580 fp8, 4300 GB/s. Prints a table and "RESULT" lines.
//   bench_indexer [--runs N] [--quick] [--only decode|prefill|topk]
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

const double kBf16Tflops = 790.0, kFp8Tflops = 1580.0, kCopyGbs = 4300.0;

#define CHECK(call)                                                                   \
    do {                                                                              \
        mla_status _s = (call);                                                       \
        if (_s != MLA_OK) {                                                           \
            std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, \
                         mla_last_error());                                           \
            std::exit(1);                                                             \
        }                                                                             \
    } while (0)

// Fills `bytes` of device memory from a host pattern, each copy starting elsewhere in it.
void fill(void *dst, int64_t bytes, const std::vector<uint8_t> &pattern, int64_t shift) {
    const int64_t half = int64_t(pattern.size()) / 2;
    for (int64_t at = 0, k = 0; at < bytes; ++k) {
        const int64_t n = std::min(half, bytes - at);
        const int64_t start = (((k + shift) * 40961) % (half / 16)) * 16;
        CHECK(mla_cuda_memcpy(static_cast<char *>(dst) + at, pattern.data() + start, n, MLA_COPY_HOST_TO_DEVICE));
        at += n;
    }
}

struct Shape {
    const char *kind;
    int64_t b, s_q, s_k, topk;
    bool causal;
};

struct Inputs {
    void *q = nullptr, *k = nullptr, *w = nullptr, *qs = nullptr, *ks = nullptr;
};

template <typename F>
double median_us(int runs, void *stream, F &&call) {
    void *e0, *e1;
    CHECK(mla_cuda_event_create(&e0));
    CHECK(mla_cuda_event_create(&e1));
    for (int i = 0; i < 3; ++i) call(i);
    CHECK(mla_cuda_stream_synchronize(stream));
    std::vector<double> t;
    for (int i = 0; i < runs; ++i) {
        CHECK(mla_cuda_event_record(e0, stream));
        call(i);
        CHECK(mla_cuda_event_record(e1, stream));
        CHECK(mla_cuda_event_synchronize(e1));
        float ms = 0;
        CHECK(mla_cuda_event_elapsed_ms(e0, e1, &ms));
        t.push_back(ms * 1e3);
    }
    mla_cuda_event_destroy(e0);
    mla_cuda_event_destroy(e1);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

int64_t visible_pairs(const Shape &s) {
    int64_t n = 0;
    for (int64_t t = 0; t < s.s_q; ++t)
        n += s.causal ? std::min(s.s_k, std::max<int64_t>(0, t + s.s_k - s.s_q + 1)) : s.s_k;
    return n * s.b;
}

}  // namespace

int main(int argc, char **argv) {
    int runs = 20;
    bool quick = false;
    std::string only;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
        if (!std::strcmp(argv[i], "--quick")) quick = true;
        if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    }
    if (mla_cuda_device_count() == 0) {
        std::printf("bench_indexer: no CUDA device (library targets %s)\n", mla_build_targets());
        return 0;
    }
    CHECK(mla_cuda_set_device(0));
    mla_cuda_device_info info;
    CHECK(mla_cuda_device_info_get(0, &info));
    std::printf("bench_indexer on %s (sm_%d%d, %d SMs, L2 %lld MB), %d timed runs each\n", info.name, info.major,
                info.minor, info.multiprocessors, (long long)(info.l2_bytes >> 20), runs);
    void *stream;
    CHECK(mla_cuda_stream_create(&stream));

    std::mt19937_64 rng(7);
    std::vector<uint8_t> pat_bf16(1 << 24), pat_fp8(1 << 24), pat_scale(1 << 22), pat_w(1 << 22);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    for (size_t i = 0; i < pat_bf16.size(); i += 2) {
        const float f = uni(rng);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        pat_bf16[i] = uint8_t(u >> 16);
        pat_bf16[i + 1] = uint8_t(u >> 24);
    }
    for (auto &b : pat_fp8) {
        do b = uint8_t(rng()); while ((b & 0x7f) == 0x7f);
    }
    for (size_t i = 0; i < pat_scale.size(); i += 4) {
        const float f = 0.01f + 0.04f * (uni(rng) * 0.5f + 0.5f);
        std::memcpy(&pat_scale[i], &f, 4);
    }
    for (size_t i = 0; i < pat_w.size(); i += 4) {
        const float f = uni(rng) * 0.125f;
        std::memcpy(&pat_w[i], &f, 4);
    }

    std::vector<Shape> shapes;
    if (only.empty() || only == "decode") {
        for (int64_t s_q : {1, 2})
            for (int64_t s_k : {8192, 32768, 65536}) {
                if (quick && s_k != 65536) continue;
                shapes.push_back({"decode", 128, s_q, s_k, 2048, true});
            }
        shapes.push_back({"decode V4", 128, 1, 65536, 512, true});
    }
    if (only.empty() || only == "prefill") {
        for (int64_t s : {4096, 8192, 16384}) {
            if (quick && s != 16384) continue;
            shapes.push_back({"prefill", 1, s, s, 2048, true});
        }
    }

    const int64_t h = 64, d = 128;
    std::printf("\n%-44s %-5s %-13s %10s %9s %8s %9s\n", "shape (h 64, d 128)", "q/k", "op", "us", "TFLOP/s",
                "of peak", "GB/s");
    for (const Shape &s : shapes) {
        for (int fp8 = 0; fp8 < 2; ++fp8) {
            const int64_t es = fp8 ? 1 : 2;
            const int64_t qb = s.b * s.s_q * h * d * es, kb = s.b * s.s_k * d * es, wb = s.b * s.s_q * h * 4;
            const int64_t set_bytes = qb + kb + wb;
            const int n_sets = int(std::min<int64_t>(8, std::max<int64_t>(1, (4 * info.l2_bytes + set_bytes - 1) / set_bytes)));
            std::vector<Inputs> sets(static_cast<size_t>(n_sets));
            for (int i = 0; i < n_sets; ++i) {
                Inputs &in = sets[size_t(i)];
                CHECK(mla_cuda_malloc(&in.q, qb));
                CHECK(mla_cuda_malloc(&in.k, kb));
                CHECK(mla_cuda_malloc(&in.w, wb));
                fill(in.q, qb, fp8 ? pat_fp8 : pat_bf16, 3 * i);
                fill(in.k, kb, fp8 ? pat_fp8 : pat_bf16, 3 * i + 1);
                fill(in.w, wb, pat_w, i);
                if (fp8) {
                    CHECK(mla_cuda_malloc(&in.qs, s.b * s.s_q * h * 4));
                    CHECK(mla_cuda_malloc(&in.ks, s.b * s.s_k * 4));
                    fill(in.qs, s.b * s.s_q * h * 4, pat_scale, i);
                    fill(in.ks, s.b * s.s_k * 4, pat_scale, i + 5);
                }
            }
            void *scores, *indices, *ws = nullptr;
            const int64_t sc_bytes = s.b * s.s_q * s.s_k * 4, idx_bytes = s.b * s.s_q * s.topk * 4;
            CHECK(mla_cuda_malloc(&scores, sc_bytes));
            CHECK(mla_cuda_malloc(&indices, idx_bytes));
            mla_indexer_params p;
            std::memset(&p, 0, sizeof p);
            p.q_dtype = p.k_dtype = fp8 ? MLA_FP8_E4M3 : MLA_BFLOAT16;
            p.w_dtype = MLA_FLOAT32;
            p.b = s.b;
            p.s_q = s.s_q;
            p.s_k = s.s_k;
            p.h = h;
            p.d = d;
            p.causal = s.causal;
            p.topk = s.topk;
            p.exec.device = 0;
            p.exec.stream = stream;
            const int64_t ws_bytes = mla_indexer_topk_workspace_size(&p);
            if (ws_bytes < 0) CHECK(MLA_ERR_INVALID_ARGUMENT);
            CHECK(mla_cuda_malloc(&ws, ws_bytes));
            auto bind = [&](int i) {
                const Inputs &in = sets[size_t(i % n_sets)];
                p.q = in.q;
                p.k = in.k;
                p.w = in.w;
                p.q_scale = static_cast<const float *>(in.qs);
                p.k_scale = static_cast<const float *>(in.ks);
            };
            const double flop = 2.0 * h * d * double(visible_pairs(s));
            const double peak = fp8 ? kFp8Tflops : kBf16Tflops;
            char name[96];
            std::snprintf(name, sizeof name, "%s b %lld s_q %lld s_k %lld topk %lld", s.kind, (long long)s.b,
                          (long long)s.s_q, (long long)s.s_k, (long long)s.topk);
            // Scores (the first call says which kernel runs).
            p.scores = static_cast<float *>(scores);
            bind(0);
            setenv("MLA4J_INDEXER_LOG", "1", 1);
            CHECK(mla_indexer_scores(&p));
            unsetenv("MLA4J_INDEXER_LOG");
            const double us_sc = median_us(runs, stream, [&](int i) {
                bind(i);
                CHECK(mla_indexer_scores(&p));
            });
            // Fused top-k.
            p.indices = static_cast<int32_t *>(indices);
            p.exec.workspace = ws;
            p.exec.workspace_bytes = ws_bytes;
            const double us_tk = median_us(runs, stream, [&](int i) {
                bind(i);
                CHECK(mla_indexer_topk(&p));
            });
            const char *dt = fp8 ? "fp8" : "bf16";
            const struct {
                const char *op;
                double us;
                int64_t bytes;
            } rows[] = {{"scores", us_sc, set_bytes + sc_bytes}, {"fused top-k", us_tk, set_bytes + idx_bytes}};
            for (const auto &r : rows) {
                const double tf = flop / (r.us * 1e-6) * 1e-12, gbs = double(r.bytes) / (r.us * 1e-6) * 1e-9;
                std::printf("%-44s %-5s %-13s %10.1f %9.1f %7.1f%% %9.1f\n", name, dt, r.op, r.us, tf, 100 * tf / peak, gbs);
                std::printf("RESULT impl=mla4j kind=%s dtype=%s op=%s b=%lld s_q=%lld s_k=%lld topk=%lld us=%.1f "
                            "tflops=%.1f gbs=%.1f\n", s.kind, dt, r.op[0] == 's' ? "scores" : "topk", (long long)s.b,
                            (long long)s.s_q, (long long)s.s_k, (long long)s.topk, r.us, tf, gbs);
            }
            std::fflush(stdout);
            for (auto &in : sets) {
                mla_cuda_free(in.q);
                mla_cuda_free(in.k);
                mla_cuda_free(in.w);
                mla_cuda_free(in.qs);
                mla_cuda_free(in.ks);
            }
            mla_cuda_free(scores);
            mla_cuda_free(indices);
            mla_cuda_free(ws);
        }
    }

    if (only.empty() || only == "topk") {
        std::printf("\n%-44s %10s %9s %8s\n", "top-k alone (float32 rows)", "us", "GB/s", "of copy");
        const struct {
            int64_t rows, n, k;
        } tks[] = {{128, 65536, 2048}, {256, 65536, 2048}, {128, 65536, 512}, {16384, 16384, 2048}, {128, 65536, 16384}};
        std::vector<float> host;
        for (const auto &t : tks) {
            if (quick && t.rows == 256) continue;
            void *sc, *idx, *val;
            CHECK(mla_cuda_malloc(&sc, t.rows * t.n * 4));
            CHECK(mla_cuda_malloc(&idx, t.rows * t.k * 4));
            CHECK(mla_cuda_malloc(&val, t.rows * t.k * 4));
            std::vector<uint8_t> pat(1 << 24);
            std::normal_distribution<float> nd(0.0f, 4.0f);
            for (size_t i = 0; i < pat.size(); i += 4) {
                const float f = nd(rng);
                std::memcpy(&pat[i], &f, 4);
            }
            fill(sc, t.rows * t.n * 4, pat, 1);
            mla_topk_params p;
            std::memset(&p, 0, sizeof p);
            p.rows = t.rows;
            p.n = t.n;
            p.k = t.k;
            p.scores = static_cast<const float *>(sc);
            p.indices = static_cast<int32_t *>(idx);
            p.values = static_cast<float *>(val);
            p.exec.device = 0;
            p.exec.stream = stream;
            const double us = median_us(runs, stream, [&](int) { CHECK(mla_topk(&p)); });
            const double bytes = double(t.rows) * (t.n * 4 + t.k * 8);
            const double gbs = bytes / (us * 1e-6) * 1e-9;
            char name[96];
            std::snprintf(name, sizeof name, "rows %lld n %lld k %lld", (long long)t.rows, (long long)t.n, (long long)t.k);
            std::printf("%-44s %10.1f %9.1f %7.1f%%\n", name, us, gbs, 100 * gbs / kCopyGbs);
            std::printf("RESULT impl=mla4j op=topk-alone rows=%lld n=%lld k=%lld us=%.1f gbs=%.1f\n", (long long)t.rows,
                        (long long)t.n, (long long)t.k, us, gbs);
            mla_cuda_free(sc);
            mla_cuda_free(idx);
            mla_cuda_free(val);
        }
    }
    mla_cuda_stream_destroy(stream);
    return 0;
}
