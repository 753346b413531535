// Benchmark of mla_dense_decode on a CUDA device: the dense-decode rows of shared/gpu/README.md
// (b 128, h_q 128, d_qk 576 / d_v 512, block_size 64, bf16, s_q 1 and 2, s_k 4096 / 8192 /
// 16384). CUDA events around each call, warm-up first, the median of many runs; the calls
// rotate over input sets (q, paged cache, block table) that together are several times the L2.
// FLOP = 2 h_q N (d_qk + d_v) summed over queries, N the keys a query attends; bytes = q +
// unique cache rows read + out + lse. Prints one table row per shape and "RESULT" lines.
//   bench_dense_decode [--runs N] [--quick] [--b B --s_k S] [--sets N] [--cache KIND]
//   (--b / --s_k: one other shape; --sets: input sets to rotate over, 1 keeps them in L2 when
//   they fit; --cache plain (bf16, default), v32 (d_qk 576) or model1 (d_qk 512, d_v 512): the
//   FP8 caches hold a quantised random pattern, and their rows are "RESULT impl=mla4j-v32" /
//   "impl=mla4j-model1")
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

const double kCeilingTflops = 790.0;  // measured bf16 matrix product on the H200 (README)

#define CHECK(call)                                                                   \
    do {                                                                              \
        mla_status _s = (call);                                                       \
        if (_s != MLA_OK) {                                                           \
            std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, \
                         mla_last_error());                                           \
            std::exit(1);                                                             \
        }                                                                             \
    } while (0)

struct Shape {
    int64_t b, s_q, h_q, d_qk, d_v, s_k, block_size;
};

// Fills `bytes` of device memory with bf16 values in [-1, 1) copied from a host pattern, each
// copy starting at another place in it.
void fill_bf16(void *dst, int64_t bytes, const std::vector<uint16_t> &pattern, int64_t shift) {
    const int64_t half = int64_t(pattern.size()) / 2;  // elements; copies start in the first half
    for (int64_t at = 0, k = 0; at < bytes; ++k) {
        const int64_t n = std::min(half * 2, bytes - at);
        const int64_t start = ((k + shift) * 40961) % half;
        CHECK(mla_cuda_memcpy(static_cast<char *>(dst) + at, pattern.data() + start, n,
                              MLA_COPY_HOST_TO_DEVICE));
        at += n;
    }
}

// Fills `bytes` of device memory (a whole number of FP8 cache blocks) from a host pattern of
// quantised blocks, each copy starting at another block of it.
void fill_blocks(void *dst, int64_t bytes, const std::vector<uint8_t> &pattern,
                 int64_t block_bytes, int64_t shift) {
    const int64_t n_pat = int64_t(pattern.size()) / block_bytes;
    for (int64_t at = 0, k = 0; at < bytes; ++k) {
        const int64_t start = ((k + shift) * 37) % n_pat;
        const int64_t n = std::min((n_pat - start) * block_bytes, bytes - at);
        CHECK(mla_cuda_memcpy(static_cast<char *>(dst) + at, pattern.data() + start * block_bytes,
                              n, MLA_COPY_HOST_TO_DEVICE));
        at += n;
    }
}

struct InputSet {
    void *q = nullptr, *cache = nullptr, *table = nullptr, *lens = nullptr;
    int64_t num_blocks = 0, max_blocks = 0;
};

}  // namespace

int main(int argc, char **argv) {
    int runs = 30;
    bool quick = false;
    int64_t only_b = 0, only_sk = 0;
    int sets_override = 0;
    int kind = MLA_CACHE_PLAIN;
    const char *force = nullptr;  // --impl NAME: exec.implementation (the plan query's names)
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--impl") && i + 1 < argc) force = argv[++i];
        if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
        if (!std::strcmp(argv[i], "--quick")) quick = true;
        if (!std::strcmp(argv[i], "--b") && i + 1 < argc) only_b = std::atoll(argv[++i]);
        if (!std::strcmp(argv[i], "--s_k") && i + 1 < argc) only_sk = std::atoll(argv[++i]);
        if (!std::strcmp(argv[i], "--sets") && i + 1 < argc) sets_override = std::atoi(argv[++i]);
        if (!std::strcmp(argv[i], "--cache") && i + 1 < argc) {
            ++i;
            kind = !std::strcmp(argv[i], "v32")      ? MLA_CACHE_V32
                   : !std::strcmp(argv[i], "model1") ? MLA_CACHE_MODEL1
                                                     : MLA_CACHE_PLAIN;
        }
    }
    if (mla_cuda_device_count() == 0) {
        std::printf("bench_dense_decode: no CUDA device (library targets %s)\n",
                    mla_build_targets());
        return 0;
    }
    CHECK(mla_cuda_set_device(0));
    mla_cuda_device_info info;
    CHECK(mla_cuda_device_info_get(0, &info));
    std::printf("bench_dense_decode on %s (sm_%d%d, %d SMs, L2 %lld MB), %d timed runs each\n",
                info.name, info.major, info.minor, info.multiprocessors,
                (long long)(info.l2_bytes >> 20), runs);

    const int64_t d_qk = kind == MLA_CACHE_MODEL1 ? 512 : 576;
    const char *kind_label = kind == MLA_CACHE_V32      ? "V32"
                             : kind == MLA_CACHE_MODEL1 ? "MODEL1"
                                                        : "bf16";
    const char *impl = kind == MLA_CACHE_V32      ? "mla4j-v32"
                       : kind == MLA_CACHE_MODEL1 ? "mla4j-model1"
                                                  : "mla4j";
    std::vector<Shape> shapes;
    for (int64_t s_q : {1, 2})
        for (int64_t s_k : {4096, 8192, 16384}) {
            if (quick && s_k != 8192) continue;
            if (only_b || only_sk) {
                if (s_k != 8192) continue;
                shapes.push_back({only_b ? only_b : 128, s_q, 128, d_qk, 512,
                                  only_sk ? only_sk : 8192, 64});
                continue;
            }
            shapes.push_back({128, s_q, 128, d_qk, 512, s_k, 64});
        }

    std::mt19937_64 rng(42);
    std::vector<uint16_t> pattern(size_t(16) << 20);
    {
        std::uniform_real_distribution<float> u(-1.f, 1.f);
        for (auto &x : pattern) {
            float f = u(rng);
            uint32_t bits;
            std::memcpy(&bits, &f, 4);
            x = uint16_t(bits >> 16);
        }
    }
    // FP8: 64 blocks of 64 tokens quantised once on the host; the device caches repeat them.
    const int64_t fp8_block = kind == MLA_CACHE_PLAIN ? 0 : mla_cache_block_bytes(kind, 64, 0, 0, 0);
    std::vector<uint8_t> fp8_pattern;
    if (kind != MLA_CACHE_PLAIN) {
        const int64_t n_pat = 64;
        std::vector<float> vals(size_t(n_pat * 64 * d_qk));
        std::uniform_real_distribution<float> u(-1.f, 1.f);
        for (auto &v : vals) v = u(rng);
        fp8_pattern.resize(size_t(n_pat * fp8_block));
        mla_quant_params qp;
        std::memset(&qp, 0, sizeof qp);
        qp.dtype = MLA_FLOAT32;
        qp.kv = vals.data();
        qp.cache.kind = kind;
        qp.cache.data = fp8_pattern.data();
        qp.cache.num_blocks = n_pat;
        qp.cache.block_size = 64;
        qp.cache.h_kv = 1;
        qp.exec.device = -1;
        CHECK(mla_kv_quantize(&qp));
    }
    void *stream = nullptr, *ev0 = nullptr, *ev1 = nullptr;
    CHECK(mla_cuda_stream_create(&stream));
    CHECK(mla_cuda_event_create(&ev0));
    CHECK(mla_cuda_event_create(&ev1));

    const std::string head = std::string("shape (bf16 q, ") + kind_label + " cache, block 64)";
    std::printf("\n%-44s %10s %10s %10s %9s\n", head.c_str(), "us", "TFLOP/s", "GB/s", "of 790");
    for (const Shape &sh : shapes) {
        const int64_t blocks_per_seq = sh.s_k / sh.block_size;
        const int64_t row = sh.d_qk;  // one KV head, contiguous rows
        const int64_t cache_bytes = kind == MLA_CACHE_PLAIN
                                        ? sh.b * blocks_per_seq * sh.block_size * row * 2
                                        : sh.b * blocks_per_seq * fp8_block;
        const int64_t q_bytes = sh.b * sh.s_q * sh.h_q * sh.d_qk * 2;
        // Enough sets that consecutive calls never find their inputs in L2.
        const int64_t set_bytes = cache_bytes + q_bytes;
        const int n_sets =
            sets_override > 0
                ? sets_override
                : int(std::max<int64_t>(2, (4 * info.l2_bytes + set_bytes - 1) / set_bytes));
        std::vector<InputSet> sets(static_cast<size_t>(n_sets));
        for (int s = 0; s < n_sets; ++s) {
            InputSet &in = sets[size_t(s)];
            in.num_blocks = sh.b * blocks_per_seq;
            in.max_blocks = blocks_per_seq;
            CHECK(mla_cuda_malloc(&in.q, q_bytes));
            CHECK(mla_cuda_malloc(&in.cache, cache_bytes));
            fill_bf16(in.q, q_bytes, pattern, 7 * s + 1);
            if (kind == MLA_CACHE_PLAIN)
                fill_bf16(in.cache, cache_bytes, pattern, 7 * s + 3);
            else
                fill_blocks(in.cache, cache_bytes, fp8_pattern, fp8_block, 7 * s + 3);
            std::vector<int32_t> ids(size_t(in.num_blocks));
            for (int64_t i = 0; i < in.num_blocks; ++i) ids[size_t(i)] = int32_t(i);
            std::shuffle(ids.begin(), ids.end(), rng);
            std::vector<int32_t> lens(size_t(sh.b), int32_t(sh.s_k));
            CHECK(mla_cuda_malloc(&in.table, int64_t(ids.size()) * 4));
            CHECK(mla_cuda_memcpy(in.table, ids.data(), int64_t(ids.size()) * 4,
                                  MLA_COPY_HOST_TO_DEVICE));
            CHECK(mla_cuda_malloc(&in.lens, sh.b * 4));
            CHECK(mla_cuda_memcpy(in.lens, lens.data(), sh.b * 4, MLA_COPY_HOST_TO_DEVICE));
        }
        void *out = nullptr, *lse = nullptr, *ws = nullptr;
        CHECK(mla_cuda_malloc(&out, sh.b * sh.s_q * sh.h_q * sh.d_v * 2));
        CHECK(mla_cuda_malloc(&lse, sh.b * sh.h_q * sh.s_q * 4));

        mla_dense_decode_params p;
        std::memset(&p, 0, sizeof p);
        p.dtype = MLA_BFLOAT16;
        p.b = sh.b;
        p.s_q = sh.s_q;
        p.h_q = sh.h_q;
        p.d_qk = sh.d_qk;
        p.d_v = sh.d_v;
        p.q_stride[2] = sh.d_qk;
        p.q_stride[1] = sh.h_q * sh.d_qk;
        p.q_stride[0] = sh.s_q * sh.h_q * sh.d_qk;
        p.cache.kind = kind;
        p.cache.dtype = MLA_BFLOAT16;
        p.cache.num_blocks = sets[0].num_blocks;
        p.cache.block_size = sh.block_size;
        p.cache.h_kv = 1;
        p.cache.head_stride = row;
        p.cache.token_stride = row;
        p.cache.block_stride = sh.block_size * row;
        p.max_blocks_per_seq = blocks_per_seq;
        p.block_table_stride = blocks_per_seq;
        p.softmax_scale = float(1.0 / std::sqrt(double(sh.d_qk)));
        p.causal = sh.s_q > 1;
        p.out = out;
        p.out_stride[2] = sh.d_v;
        p.out_stride[1] = sh.h_q * sh.d_v;
        p.out_stride[0] = sh.s_q * sh.h_q * sh.d_v;
        p.lse = static_cast<float *>(lse);
        p.exec.device = 0;
        p.exec.stream = stream;
        p.exec.implementation = force;
        const int64_t ws_bytes = mla_dense_decode_workspace_size(&p);
        if (ws_bytes < 0) {
            std::fprintf(stderr, "workspace query failed: %s\n", mla_last_error());
            return 1;
        }
        CHECK(mla_cuda_malloc(&ws, ws_bytes));
        p.exec.workspace = ws;
        p.exec.workspace_bytes = ws_bytes;

        auto call = [&](int i) {
            const InputSet &in = sets[size_t(i % n_sets)];
            p.q = in.q;
            p.cache.data = in.cache;
            p.block_table = static_cast<const int32_t *>(in.table);
            p.cache_seqlens = static_cast<const int32_t *>(in.lens);
            CHECK(mla_dense_decode(&p));
        };
        for (int i = 0; i < 5; ++i) call(i);
        CHECK(mla_cuda_stream_synchronize(stream));
        std::vector<float> ms;
        for (int i = 0; i < runs; ++i) {
            CHECK(mla_cuda_event_record(ev0, stream));
            call(i);
            CHECK(mla_cuda_event_record(ev1, stream));
            CHECK(mla_cuda_event_synchronize(ev1));
            float t = 0;
            CHECK(mla_cuda_event_elapsed_ms(ev0, ev1, &t));
            ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        const double med_s = ms[ms.size() / 2] * 1e-3;

        double flop = 0;
        for (int64_t j = 0; j < sh.s_q; ++j) {
            const int64_t n = p.causal ? sh.s_k - sh.s_q + j + 1 : sh.s_k;
            flop += 2.0 * double(sh.h_q) * double(n) * double(sh.d_qk + sh.d_v) * double(sh.b);
        }
        const double bytes = double(q_bytes) + double(cache_bytes) +
                             double(sh.b * sh.s_q * sh.h_q * sh.d_v * 2) +
                             double(sh.b * sh.h_q * sh.s_q * 4);
        const double tflops = flop / med_s * 1e-12, gbs = bytes / med_s * 1e-9;
        char name[128];
        std::snprintf(name, sizeof name, "b %lld s_q %lld h_q %lld d %lld/%lld s_k %lld",
                      (long long)sh.b, (long long)sh.s_q, (long long)sh.h_q, (long long)sh.d_qk,
                      (long long)sh.d_v, (long long)sh.s_k);
        std::printf("%-44s %10.1f %10.1f %10.1f %8.1f%%\n", name, med_s * 1e6, tflops, gbs,
                    100.0 * tflops / kCeilingTflops);
        std::printf("RESULT impl=%s s_q=%lld s_k=%lld us=%.1f tflops=%.1f gbs=%.1f\n", impl,
                    (long long)sh.s_q, (long long)sh.s_k, med_s * 1e6, tflops, gbs);
        std::fflush(stdout);

        for (InputSet &in : sets) {
            CHECK(mla_cuda_free(in.q));
            CHECK(mla_cuda_free(in.cache));
            CHECK(mla_cuda_free(in.table));
            CHECK(mla_cuda_free(in.lens));
        }
        CHECK(mla_cuda_free(out));
        CHECK(mla_cuda_free(lse));
        CHECK(mla_cuda_free(ws));
    }
    CHECK(mla_cuda_event_destroy(ev0));
    CHECK(mla_cuda_event_destroy(ev1));
    CHECK(mla_cuda_stream_destroy(stream));
    return 0;
}
