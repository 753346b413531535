// Entry points of the lightning indexer and top-k (ops.md section 6): argument checks, then
// the CPU kernels, or with exec.device >= 0 the CUDA path (src/cuda/indexer/), which reads
// none of the pointed-to data on the host.
#include <cstdint>
#include "api/device_dispatch.h"
#include "common/dtype.h"
#include "common/error.h"
#include "cpu/misc_kernels.h"
#include "cuda/indexer/indexer.h"  // plain C++: the workspace arithmetic is needed in every build

namespace {

using mla::fail;

bool is_indexer_operand_dtype(int32_t dt) { return mla::is_float_dtype(dt) || dt == MLA_FP8_E4M3; }

// Checks one of q / k: dtype, data pointer (unless `pointers` is false: the workspace query
// reads sizes only), and a scale exactly when the dtype is FP8.
mla_status check_operand(const char *op, const char *name, int32_t dtype, const void *data,
                         const float *scale, bool non_empty, bool pointers) {
    MLA_REQUIRE(is_indexer_operand_dtype(dtype),
                "%s: %s_dtype must be float32, float64, float16, bfloat16 or float8_e4m3, got %s",
                op, name, mla::dtype_name(dtype));
    if (!pointers) return MLA_OK;
    MLA_REQUIRE(data != nullptr || !non_empty, "%s: %s must not be null", op, name);
    if (dtype == MLA_FP8_E4M3)
        MLA_REQUIRE(scale != nullptr || !non_empty,
                    "%s: %s_scale must not be null when %s_dtype is float8_e4m3", op, name, name);
    else
        MLA_REQUIRE(scale == nullptr, "%s: %s_scale must be null unless %s_dtype is float8_e4m3, "
                    "got a scale with %s_dtype %s", op, name, name, name, mla::dtype_name(dtype));
    return MLA_OK;
}

// Checks what the forward and backward share: dtypes, sizes and (with `pointers`) inputs.
mla_status check_inputs(const mla_indexer_params &p, const char *op, bool pointers = true) {
    MLA_REQUIRE(p.b >= 0, "%s: b must be >= 0, got %lld", op, (long long)p.b);
    MLA_REQUIRE(p.s_q >= 0, "%s: s_q must be >= 0, got %lld", op, (long long)p.s_q);
    MLA_REQUIRE(p.s_k >= 0, "%s: s_k must be >= 0, got %lld", op, (long long)p.s_k);
    MLA_REQUIRE(p.h >= 1, "%s: h must be >= 1, got %lld", op, (long long)p.h);
    MLA_REQUIRE(p.d >= 1, "%s: d must be >= 1, got %lld", op, (long long)p.d);
    bool has_q = p.b * p.s_q > 0, has_k = p.b * p.s_k > 0;
    MLA_TRY(check_operand(op, "q", p.q_dtype, p.q, p.q_scale, has_q, pointers));
    MLA_TRY(check_operand(op, "k", p.k_dtype, p.k, p.k_scale, has_k, pointers));
    MLA_REQUIRE(mla::is_float_dtype(p.w_dtype),
                "%s: w_dtype must be float32, float64, float16 or bfloat16, got %s", op,
                mla::dtype_name(p.w_dtype));
    MLA_REQUIRE(p.w != nullptr || !has_q || !pointers, "%s: w must not be null", op);
    return MLA_OK;
}

// A top-k count: at most INT32_MAX, the most int32 indices a row can hold (a larger one would
// describe an index buffer no caller has; its -1 padding would be written past the end).
mla_status check_k(int64_t k, const char *op, const char *name) {
    MLA_REQUIRE(k >= 0, "%s: %s must be >= 0, got %lld", op, name, (long long)k);
    MLA_REQUIRE(k <= INT32_MAX, "%s: %s must be <= %d (int32 index positions), got %lld", op,
                name, INT32_MAX, (long long)k);
    return MLA_OK;
}

// The checks of mla_indexer_topk (shared with its workspace query, which reads no pointers).
mla_status check_topk_args(const mla_indexer_params &p, const char *op, bool pointers = true) {
    MLA_TRY(check_inputs(p, op, pointers));
    MLA_TRY(check_k(p.topk, op, "topk"));
    MLA_REQUIRE(p.s_k <= INT32_MAX, "%s: s_k must be <= %d for int32 indices, got %lld", op,
                INT32_MAX, (long long)p.s_k);
    MLA_REQUIRE(p.indices != nullptr || p.b * p.s_q * p.topk == 0 || !pointers,
                "%s: indices must not be null", op);
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_indexer_scores(const mla_indexer_params *p) {
    const char *op = "mla_indexer_scores";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(check_inputs(*p, op));
    MLA_REQUIRE(p->scores != nullptr || p->b * p->s_q * p->s_k == 0,
                "%s: scores must not be null", op);
#ifdef MLA4J_WITH_CUDA
    if (p->exec.device >= 0)
        return mla::run_on_device(p->exec, op, [&] { return mla::cuda::indexer_scores(*p); });
#endif
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::indexer_scores(*p); });
}

extern "C" mla_status mla_indexer_topk(const mla_indexer_params *p) {
    const char *op = "mla_indexer_topk";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(check_topk_args(*p, op));
#ifdef MLA4J_WITH_CUDA
    if (p->exec.device >= 0)
        return mla::run_on_device(p->exec, op, [&] { return mla::cuda::indexer_topk(*p); });
#endif
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::indexer_topk(*p); });
}

extern "C" int64_t mla_indexer_topk_workspace_size(const mla_indexer_params *p) {
    const char *op = "mla_indexer_topk_workspace_size";
    if (!p) {
        fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
        return -1;
    }
    if (check_topk_args(*p, op, false) != MLA_OK) return -1;
    if (p->exec.device < 0) return 0;
    // Sizes only: the same in every build and on every device.
    return mla::cuda::indexer_topk_workspace_bytes(*p);
}

extern "C" mla_status mla_indexer_scores_bwd(const mla_indexer_params *p) {
    const char *op = "mla_indexer_scores_bwd";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(check_inputs(*p, op));
    MLA_REQUIRE(p->dscores != nullptr || p->b * p->s_q * p->s_k == 0,
                "%s: dscores must not be null", op);
    MLA_REQUIRE(p->dq != nullptr || p->b * p->s_q == 0, "%s: dq must not be null", op);
    MLA_REQUIRE(p->dw != nullptr || p->b * p->s_q == 0, "%s: dw must not be null", op);
    MLA_REQUIRE(p->dk != nullptr || p->b * p->s_k == 0, "%s: dk must not be null", op);
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::indexer_scores_bwd(*p); });
}

extern "C" mla_status mla_topk(const mla_topk_params *p) {
    const char *op = "mla_topk";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_REQUIRE(p->rows >= 0, "%s: rows must be >= 0, got %lld", op, (long long)p->rows);
    MLA_REQUIRE(p->n >= 0, "%s: n must be >= 0, got %lld", op, (long long)p->n);
    MLA_REQUIRE(p->n <= INT32_MAX, "%s: n must be <= %d for int32 indices, got %lld", op,
                INT32_MAX, (long long)p->n);
    MLA_TRY(check_k(p->k, op, "k"));
    MLA_REQUIRE(p->scores != nullptr || p->rows * p->n == 0, "%s: scores must not be null", op);
    MLA_REQUIRE(p->indices != nullptr || p->rows * p->k == 0, "%s: indices must not be null", op);
#ifdef MLA4J_WITH_CUDA
    if (p->exec.device >= 0)
        return mla::run_on_device(p->exec, op, [&] { return mla::cuda::topk(*p); });
#endif
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::topk(*p); });
}
