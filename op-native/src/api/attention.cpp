// Dense attention, forward and backward (ops.md section 4), batched or variable-length: the
// one check of their arguments, then the CPU kernels.
#include "api/forward_checks.h"
#include "cpu/backward_kernels.h"
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

// Every check of a call that needs no data; `backward` adds dout, dq, dk, dv. Fills the rows
// of queries and keys and whether the call is variable-length.
mla_status check(const mla_attention_params &p, const char *op, bool backward, int64_t *rows,
                 int64_t *key_rows, bool *varlen) {
    MLA_TRY(chk::dtype(p.dtype, op));
    MLA_TRY(chk::size(p.b, op, "b"));
    MLA_TRY(chk::heads(p.h_q, p.h_kv, op));
    MLA_TRY(chk::positive(p.d_qk, op, "d_qk"));
    MLA_TRY(chk::positive(p.d_v, op, "d_v"));
    // v aliasing k reads the first d_v dims of each key row; its gradient adds into dk.
    const bool alias = p.v != nullptr && p.v == p.k;
    if (alias)
        MLA_REQUIRE(p.d_v <= p.d_qk,
                    "%s: d_v must be <= d_qk (%lld) when v aliases k, got %lld", op,
                    (long long)p.d_qk, (long long)p.d_v);
    MLA_REQUIRE(p.window >= 0, "%s: window must be >= 0 (0: none), got %lld", op,
                (long long)p.window);
    *varlen = p.cu_seqlens_q != nullptr || p.cu_seqlens_k != nullptr;
    if (*varlen) {
        MLA_REQUIRE(p.cu_seqlens_q != nullptr && p.cu_seqlens_k != nullptr,
                    "%s: variable-length mode needs both cu_seqlens_q and cu_seqlens_k, got %s "
                    "NULL", op, p.cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q");
        MLA_TRY(chk::size(p.total_q, op, "total_q"));
        MLA_TRY(chk::size(p.total_k, op, "total_k"));
        *rows = p.total_q;
        *key_rows = p.total_k;
    } else {
        MLA_TRY(chk::size(p.s_q, op, "s_q"));
        MLA_TRY(chk::size(p.s_k, op, "s_k"));
        *rows = p.b * p.s_q;
        *key_rows = p.b * p.s_k;
    }
    const bool any_q = *rows > 0, any_k = *key_rows > 0;
    MLA_TRY(chk::pointer(p.q, any_q, op, "q"));
    MLA_TRY(chk::pointer(p.k, any_q && any_k, op, "k"));
    MLA_TRY(chk::pointer(p.v, any_q && any_k, op, "v"));
    MLA_TRY(chk::pointer(p.out, any_q, op, "out"));
    MLA_TRY(chk::pointer(p.lse, any_q, op, "lse"));
    MLA_TRY(chk::strides(p.q_stride, 3, op, "q_stride"));
    MLA_TRY(chk::strides(p.k_stride, 3, op, "k_stride"));
    MLA_TRY(chk::strides(p.v_stride, 3, op, "v_stride"));
    MLA_TRY(chk::strides(p.out_stride, 3, op, "out_stride"));
    if (backward) {
        if (alias) {
            for (int i = *varlen ? 1 : 0; i < 3; ++i)
                MLA_REQUIRE(p.v_stride[i] == p.k_stride[i], "%s: v_stride[%d] must equal "
                            "k_stride[%d] (%lld) when v aliases k, got %lld", op, i, i,
                            (long long)p.k_stride[i], (long long)p.v_stride[i]);
            MLA_REQUIRE(p.dv == nullptr, "%s: dv must be NULL when v aliases k (the value "
                        "gradient adds into dk), got a pointer", op);
        } else {
            MLA_TRY(chk::pointer(p.dv, any_k, op, "dv"));
        }
        MLA_TRY(chk::pointer(p.k, any_k, op, "k"));
        MLA_TRY(chk::pointer(p.v, any_k, op, "v"));
        MLA_TRY(chk::pointer(p.dk, any_k, op, "dk"));
        MLA_TRY(chk::pointer(p.dout, any_q, op, "dout"));
        MLA_TRY(chk::pointer(p.dq, any_q, op, "dq"));
        MLA_TRY(chk::strides(p.dout_stride, 3, op, "dout_stride"));
    }
    MLA_TRY(chk::scale(p.softmax_scale, op));
    MLA_TRY(chk::rotation(p.out_rotation, p.d_v, op));
    MLA_TRY(chk::exec(p.exec, op));
    return MLA_OK;
}

// The checks that read host data: cu_seqlens and rotation positions.
mla_status check_host_data(const mla_attention_params &p, const char *op, int64_t rows, bool varlen) {
    if (varlen) {
        MLA_TRY(check_cu_seqlens(p.cu_seqlens_q, p.b, p.total_q, op, "cu_seqlens_q", "total_q"));
        MLA_TRY(check_cu_seqlens(p.cu_seqlens_k, p.b, p.total_k, op, "cu_seqlens_k", "total_k"));
    }
    return chk::positions(p.out_rotation, rows, op);
}

}  // namespace

extern "C" mla_status mla_attention_fwd(const mla_attention_params *p) {
    const char *op = "mla_attention_fwd";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    int64_t rows, key_rows;
    bool varlen;
    MLA_TRY(check(*p, op, false, &rows, &key_rows, &varlen));
    MLA_TRY(check_host_data(*p, op, rows, varlen));
    if (rows == 0) return MLA_OK;
    return chk::run_kernel(op, [&] { mla::cpu::attention_fwd(*p); });
}

extern "C" mla_status mla_attention_bwd(const mla_attention_params *p) {
    const char *op = "mla_attention_bwd";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    int64_t rows, key_rows;
    bool varlen;
    MLA_TRY(check(*p, op, true, &rows, &key_rows, &varlen));
    MLA_TRY(check_host_data(*p, op, rows, varlen));
    return chk::run_kernel(op, [&] { mla::cpu::attention_backward(*p); });
}
