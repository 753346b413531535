// Host side of the lightning indexer and top-k on a CUDA device (ops.md section 6): device and
// pointer checks, the choice of the score kernel, and the launches. mla_indexer_scores is one
// launch writing the [b, s_q, s_k] scores; mla_indexer_topk alternates a score launch over a
// chunk of query rows into the workspace and a top-k launch over those rows, so the scores of
// all rows never exist at once; mla_topk is one top-k launch.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "cuda/common/check.cuh"
#include "cuda/common/device_scope.cuh"
#include "cuda/indexer/indexer.h"
#include "cuda/indexer/launch.h"
#include "cuda/runtime.h"

namespace mla {
namespace cuda {
namespace {

using indexer::ScoresArgs;
using indexer::TopkArgs;

bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

mla_status check_device(int dev, const char *op, DeviceScope *scope) {
    const int n = device_count();
    MLA_REQUIRE(dev >= 0 && dev < n, "%s: exec.device must be in [0, %d), got %d", op, n, dev);
    return scope->enter(dev, op);
}

mla_status check_indexer_pointers(const mla_indexer_params &p, const char *op) {
    MLA_TRY(device_pointer(p.q, op, "q"));
    MLA_TRY(device_pointer(p.q_scale, op, "q_scale"));
    MLA_TRY(device_pointer(p.k, op, "k"));
    MLA_TRY(device_pointer(p.k_scale, op, "k_scale"));
    MLA_TRY(device_pointer(p.w, op, "w"));
    return MLA_OK;
}

// Which score kernel runs: the sm_90a tensor-core kernel for DeepSeek's indexer shape (h 64,
// d 128, q and k both bf16 or both float8_e4m3, w not float64, 16-byte aligned q and k) on a
// compute capability 9.0 device, else the CUDA-core kernel. MLA4J_INDEXER_KERNEL=simple
// forces the CUDA-core kernel (tests run both on one device); MLA4J_INDEXER_LOG=1 prints the
// choice of every call to stderr.
struct ScoresPlan {
    bool wgmma = false;
    int fp8 = 0;
    int tokens = 1;
};

mla_status plan_scores(const mla_indexer_params &p, ScoresPlan *plan, const char *op) {
    ScoresPlan pl;
    const char *cap = std::getenv("MLA4J_INDEXER_KERNEL");
    const bool allow = !cap || std::strcmp(cap, "simple") != 0;
    const bool shape = p.h == 64 && p.d == 128 && p.q_dtype == p.k_dtype &&
                       (p.q_dtype == MLA_BFLOAT16 || p.q_dtype == MLA_FP8_E4M3) &&
                       p.w_dtype != MLA_FLOAT64 && aligned16(p.q) && aligned16(p.k);
    if (allow && shape && indexer::scores_wgmma_available(p.exec.device)) {
        pl.fp8 = p.q_dtype == MLA_FP8_E4M3 ? 1 : 0;
        pl.tokens = p.s_q <= 1 ? 1 : p.s_q == 2 ? 2 : 4;
        int optin = 0;
        MLA_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                            p.exec.device));
        pl.wgmma = indexer::scores_wgmma_smem(pl.fp8, pl.tokens) <= optin;
    }
    if (std::getenv("MLA4J_INDEXER_LOG")) {
        if (pl.wgmma)
            std::fprintf(stderr, "%s: sm90 tensor-core kernel, %s, %d query tokens per CTA\n", op,
                         pl.fp8 ? "float8_e4m3" : "bf16", pl.tokens);
        else
            std::fprintf(stderr, "%s: CUDA-core kernel\n", op);
    }
    *plan = pl;
    return MLA_OK;
}

mla_status launch_scores(const ScoresPlan &pl, const ScoresArgs &a, cudaStream_t s,
                         const char *op) {
    if (!pl.wgmma) return indexer::launch_scores_simple(a, s, op);
    if (pl.fp8) {
        switch (pl.tokens) {
            case 1: return indexer::launch_scores_wgmma<1, 1>(a, s, op);
            case 2: return indexer::launch_scores_wgmma<1, 2>(a, s, op);
            default: return indexer::launch_scores_wgmma<1, 4>(a, s, op);
        }
    }
    switch (pl.tokens) {
        case 1: return indexer::launch_scores_wgmma<0, 1>(a, s, op);
        case 2: return indexer::launch_scores_wgmma<0, 2>(a, s, op);
        default: return indexer::launch_scores_wgmma<0, 4>(a, s, op);
    }
}

ScoresArgs scores_args(const mla_indexer_params &p) {
    ScoresArgs a{};
    a.q_dtype = p.q_dtype;
    a.k_dtype = p.k_dtype;
    a.w_dtype = p.w_dtype;
    a.causal = p.causal ? 1 : 0;
    a.s_q = p.s_q;
    a.s_k = p.s_k;
    a.h = p.h;
    a.d = p.d;
    a.q = p.q;
    a.q_scale = p.q_scale;
    a.k = p.k;
    a.k_scale = p.k_scale;
    a.w = p.w;
    return a;
}

// The top-k kernel sorts its chosen entries in shared memory.
mla_status check_topk_size(int64_t n, int64_t k, const char *op, const char *n_name,
                           const char *k_name) {
    const int64_t m = n < k ? n : k;
    if (m > indexer::kTopkMaxSort)
        return fail(MLA_ERR_UNSUPPORTED,
                    "%s: on a GPU, min(%s, %s) must be <= %lld (the selected entries are sorted "
                    "in shared memory), got min(%lld, %lld)",
                    op, k_name, n_name, (long long)indexer::kTopkMaxSort, (long long)k,
                    (long long)n);
    return MLA_OK;
}

}  // namespace

mla_status indexer_scores(const mla_indexer_params &p) {
    const char *op = "mla_indexer_scores";
    DeviceScope scope;
    MLA_TRY(check_device(p.exec.device, op, &scope));
    if (p.b * p.s_q * p.s_k == 0) return MLA_OK;
    MLA_TRY(check_indexer_pointers(p, op));
    MLA_TRY(device_pointer(p.scores, op, "scores"));
    ScoresPlan pl;
    MLA_TRY(plan_scores(p, &pl, op));
    ScoresArgs a = scores_args(p);
    a.b0 = 0;
    a.nb = p.b;
    a.t0 = 0;
    a.nt = p.s_q;
    a.out = p.scores;
    a.fill_masked = 1;
    return launch_scores(pl, a, static_cast<cudaStream_t>(p.exec.stream), op);
}

mla_status indexer_topk(const mla_indexer_params &p) {
    const char *op = "mla_indexer_topk";
    DeviceScope scope;
    MLA_TRY(check_device(p.exec.device, op, &scope));
    if (p.b * p.s_q * p.topk == 0) return MLA_OK;
    MLA_TRY(check_topk_size(p.s_k, p.topk, op, "s_k", "topk"));
    MLA_TRY(check_indexer_pointers(p, op));
    MLA_TRY(device_pointer(p.indices, op, "indices"));
    const int64_t ws = indexer_topk_workspace_bytes(p);
    MLA_REQUIRE(p.exec.workspace_bytes >= ws && (ws == 0 || p.exec.workspace != nullptr),
                "%s: exec.workspace must hold mla_indexer_topk_workspace_size() = %lld bytes, "
                "got %lld bytes at %p", op, (long long)ws, (long long)p.exec.workspace_bytes,
                p.exec.workspace);
    MLA_TRY(device_pointer(p.exec.workspace, op, "exec.workspace"));
    const cudaStream_t s = static_cast<cudaStream_t>(p.exec.stream);

    TopkArgs t{};
    t.scores = static_cast<const float *>(p.exec.workspace);
    t.row_stride = p.s_k;
    t.n = p.s_k;
    t.s_q = p.s_q;
    t.causal = p.causal ? 1 : 0;
    t.k = p.topk;
    t.indices = p.indices;
    t.values = nullptr;
    if (p.s_k == 0) {  // no key: every index is -1
        t.rows = p.b * p.s_q;
        t.b0 = 0;
        t.t0 = 0;
        t.nt = p.b * p.s_q;
        t.s_q = p.b * p.s_q;
        return indexer::launch_topk(t, s, op);
    }
    ScoresPlan pl;
    MLA_TRY(plan_scores(p, &pl, op));
    ScoresArgs a = scores_args(p);
    a.out = static_cast<float *>(p.exec.workspace);
    a.fill_masked = 0;
    const IndexerChunks c = indexer_chunks(p.b, p.s_q, p.s_k);
    for (int64_t b0 = 0; b0 < p.b; b0 += c.batches) {
        const int64_t nb = b0 + c.batches <= p.b ? c.batches : p.b - b0;
        for (int64_t t0 = 0; t0 < p.s_q; t0 += c.tokens) {
            const int64_t nt = t0 + c.tokens <= p.s_q ? c.tokens : p.s_q - t0;
            a.b0 = b0;
            a.nb = nb;
            a.t0 = t0;
            a.nt = nt;
            MLA_TRY(launch_scores(pl, a, s, op));
            t.rows = nb * nt;
            t.b0 = b0;
            t.t0 = t0;
            t.nt = nt;
            MLA_TRY(indexer::launch_topk(t, s, op));
        }
    }
    return MLA_OK;
}

mla_status topk(const mla_topk_params &p) {
    const char *op = "mla_topk";
    DeviceScope scope;
    MLA_TRY(check_device(p.exec.device, op, &scope));
    if (p.rows * p.k == 0) return MLA_OK;
    MLA_TRY(check_topk_size(p.n, p.k, op, "n", "k"));
    MLA_TRY(device_pointer(p.scores, op, "scores"));
    MLA_TRY(device_pointer(p.indices, op, "indices"));
    MLA_TRY(device_pointer(p.values, op, "values"));
    TopkArgs t{};
    t.rows = p.rows;
    t.scores = p.scores;
    t.row_stride = p.n;
    t.n = p.n;
    t.b0 = 0;
    t.t0 = 0;
    t.nt = p.rows;
    t.s_q = p.rows;
    t.causal = 0;
    t.k = p.k;
    t.indices = p.indices;
    t.values = p.values;
    return indexer::launch_topk(t, static_cast<cudaStream_t>(p.exec.stream), op);
}

}  // namespace cuda
}  // namespace mla
