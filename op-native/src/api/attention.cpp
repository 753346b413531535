// Entry point of dense attention, forward (ops.md section 4), batched or variable-length:
// argument checks, then the CPU kernel. The backward entry point lives with the other backward
// ops (api/backward.cpp).
#include "api/forward_checks.h"
#include "cpu/kernels.h"

namespace {

namespace chk = mla::fwd_checks;

// Host data: cu_seqlens int32 [b + 1] starts at 0, never decreases and ends at `total`.
mla_status check_cu_seqlens(const int32_t *cu, int64_t b, int64_t total, const char *op,
                            const char *arg, const char *total_arg) {
    MLA_REQUIRE(cu[0] == 0, "%s: %s[0] must be 0, got %d", op, arg, cu[0]);
    for (int64_t i = 0; i < b; ++i)
        MLA_REQUIRE(cu[i + 1] >= cu[i], "%s: %s must not decrease, got %s[%lld] = %d after %d",
                    op, arg, arg, (long long)(i + 1), cu[i + 1], cu[i]);
    MLA_REQUIRE(cu[b] == total, "%s: %s[b] must equal %s (%lld), got %d", op, arg, total_arg,
                (long long)total, cu[b]);
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_attention_fwd(const mla_attention_params *p) {
    const char *op = "mla_attention_fwd";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(chk::dtype(p->dtype, op));
    MLA_TRY(chk::size(p->b, op, "b"));
    MLA_TRY(chk::heads(p->h_q, p->h_kv, op));
    MLA_TRY(chk::positive(p->d_qk, op, "d_qk"));
    MLA_TRY(chk::positive(p->d_v, op, "d_v"));
    // v aliasing k reads the first d_v dims of each key row.
    if (p->v != nullptr && p->v == p->k)
        MLA_REQUIRE(p->d_v <= p->d_qk,
                    "%s: d_v must be <= d_qk (%lld) when v aliases k, got %lld", op,
                    (long long)p->d_qk, (long long)p->d_v);
    MLA_REQUIRE(p->window >= 0, "%s: window must be >= 0 (0: none), got %lld", op,
                (long long)p->window);

    const bool varlen = p->cu_seqlens_q != nullptr || p->cu_seqlens_k != nullptr;
    int64_t rows, key_rows;
    if (varlen) {
        MLA_REQUIRE(p->cu_seqlens_q != nullptr && p->cu_seqlens_k != nullptr,
                    "%s: variable-length mode needs both cu_seqlens_q and cu_seqlens_k, got %s "
                    "NULL", op, p->cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q");
        MLA_TRY(chk::size(p->total_q, op, "total_q"));
        MLA_TRY(chk::size(p->total_k, op, "total_k"));
        rows = p->total_q;
        key_rows = p->total_k;
    } else {
        MLA_TRY(chk::size(p->s_q, op, "s_q"));
        MLA_TRY(chk::size(p->s_k, op, "s_k"));
        rows = p->b * p->s_q;
        key_rows = p->b * p->s_k;
    }
    MLA_TRY(chk::pointer(p->q, rows > 0, op, "q"));
    MLA_TRY(chk::pointer(p->k, rows > 0 && key_rows > 0, op, "k"));
    MLA_TRY(chk::pointer(p->v, rows > 0 && key_rows > 0, op, "v"));
    MLA_TRY(chk::pointer(p->out, rows > 0, op, "out"));
    MLA_TRY(chk::pointer(p->lse, rows > 0, op, "lse"));
    MLA_TRY(chk::strides(p->q_stride, 3, op, "q_stride"));
    MLA_TRY(chk::strides(p->k_stride, 3, op, "k_stride"));
    MLA_TRY(chk::strides(p->v_stride, 3, op, "v_stride"));
    MLA_TRY(chk::strides(p->out_stride, 3, op, "out_stride"));
    MLA_TRY(chk::scale(p->softmax_scale, op));
    MLA_TRY(chk::rotation(p->out_rotation, p->d_v, op));
    MLA_TRY(chk::exec(p->exec, op));

    if (varlen) {
        MLA_TRY(check_cu_seqlens(p->cu_seqlens_q, p->b, p->total_q, op, "cu_seqlens_q", "total_q"));
        MLA_TRY(check_cu_seqlens(p->cu_seqlens_k, p->b, p->total_k, op, "cu_seqlens_k", "total_k"));
    }
    if (rows == 0) return MLA_OK;
    MLA_TRY(chk::positions(p->out_rotation, rows, op));
    return chk::run_kernel(op, [&] { mla::cpu::attention_fwd(*p); });
}
