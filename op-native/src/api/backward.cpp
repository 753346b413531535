// Entry points of the attention backward ops (ops.md sections 3 and 4): argument checks, then
// the CPU kernels. Every argument is checked before anything is written. Scalar and pointer
// checks come first, then the device (a GPU call is refused before any pointed-to data is
// read on the host), then the checks that read small index arrays (cu_seqlens, positions).
#include <cmath>
#include <exception>
#include <new>

#include "common/dtype.h"
#include "common/error.h"
#include "common/rope.h"
#include "cpu/backward_kernels.h"

namespace {

using mla::fail;

mla_status check_dtype(int32_t dtype, const char *op) {
    MLA_REQUIRE(mla::is_float_dtype(dtype),
                "%s: dtype must be float32, float64, float16 or bfloat16, got %s (%d)", op,
                mla::dtype_name(dtype), dtype);
    return MLA_OK;
}

mla_status check_heads(int64_t h_q, int64_t h_kv, const char *op) {
    MLA_REQUIRE(h_q >= 1, "%s: h_q must be >= 1, got %lld", op, (long long)h_q);
    MLA_REQUIRE(h_kv >= 1, "%s: h_kv must be >= 1, got %lld", op, (long long)h_kv);
    MLA_REQUIRE(h_q % h_kv == 0, "%s: h_q must be a multiple of h_kv, got h_q %lld, h_kv %lld",
                op, (long long)h_q, (long long)h_kv);
    return MLA_OK;
}

mla_status check_pointer(const void *ptr, bool needed, const char *op, const char *arg) {
    MLA_REQUIRE(ptr != nullptr || !needed, "%s: %s must not be null, got NULL", op, arg);
    return MLA_OK;
}

mla_status check_strides(const int64_t *st, int n, const char *op, const char *arg) {
    for (int i = 0; i < n; ++i)
        MLA_REQUIRE(st[i] >= 0, "%s: %s[%d] must be >= 0, got %lld", op, arg, i,
                    (long long)st[i]);
    return MLA_OK;
}

// The rotation descriptor (no data read).
mla_status check_rotation_desc(const mla_out_rotation &r, int64_t d_v, const char *op) {
    if (!r.positions) return MLA_OK;
    return mla::check_rope(r.rope, d_v, op, "out_rotation.rope");
}

// Positions must index the cos / sin tables when tables are given.
mla_status check_positions(const mla_out_rotation &r, int64_t rows, const char *op) {
    if (!r.positions || !r.rope.cos_table) return MLA_OK;
    for (int64_t i = 0; i < rows; ++i)
        MLA_REQUIRE(r.positions[i] >= 0 && r.positions[i] < r.rope.table_len,
                    "%s: out_rotation.positions[%lld] must be in [0, %lld) (the table length), "
                    "got %d", op, (long long)i, (long long)r.rope.table_len, r.positions[i]);
    return MLA_OK;
}

mla_status check_exec(const mla_exec &e, const char *op) {
    MLA_REQUIRE(e.num_threads >= 0, "%s: exec.num_threads must be >= 0, got %d", op,
                e.num_threads);
    if (e.device >= 0)
        return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: no GPU implementation in this build",
                    op, e.device);
    return MLA_OK;
}

// cu_seqlens int32 [b + 1]: starts at 0, never decreases, ends at `total`.
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

template <typename F>
mla_status run_kernel(const char *op, F &&kernel) {
    try {
        kernel();
    } catch (const std::bad_alloc &) {
        return fail(MLA_ERR_OUT_OF_MEMORY, "%s: out of host memory for scratch buffers", op);
    } catch (const std::exception &e) {
        return fail(MLA_ERR_INTERNAL, "%s: %s", op, e.what());
    }
    return MLA_OK;
}

mla_status check_attention(const mla_attention_params &p, const char *op) {
    MLA_TRY(check_dtype(p.dtype, op));
    MLA_REQUIRE(p.b >= 0, "%s: b must be >= 0, got %lld", op, (long long)p.b);
    MLA_TRY(check_heads(p.h_q, p.h_kv, op));
    MLA_REQUIRE(p.d_qk >= 1, "%s: d_qk must be >= 1, got %lld", op, (long long)p.d_qk);
    MLA_REQUIRE(p.d_v >= 1, "%s: d_v must be >= 1, got %lld", op, (long long)p.d_v);
    bool varlen = p.cu_seqlens_q || p.cu_seqlens_k;
    MLA_REQUIRE(!varlen || (p.cu_seqlens_q && p.cu_seqlens_k),
                "%s: cu_seqlens_q and cu_seqlens_k must be both set (variable length) or both "
                "NULL (batched), got cu_seqlens_q %s, cu_seqlens_k %s", op,
                p.cu_seqlens_q ? "set" : "NULL", p.cu_seqlens_k ? "set" : "NULL");
    int64_t rows_q, rows_k;
    if (varlen) {
        MLA_REQUIRE(p.total_q >= 0, "%s: total_q must be >= 0, got %lld", op, (long long)p.total_q);
        MLA_REQUIRE(p.total_k >= 0, "%s: total_k must be >= 0, got %lld", op, (long long)p.total_k);
        rows_q = p.total_q;
        rows_k = p.total_k;
    } else {
        MLA_REQUIRE(p.s_q >= 0, "%s: s_q must be >= 0, got %lld", op, (long long)p.s_q);
        MLA_REQUIRE(p.s_k >= 0, "%s: s_k must be >= 0, got %lld", op, (long long)p.s_k);
        rows_q = p.b * p.s_q;
        rows_k = p.b * p.s_k;
    }
    MLA_REQUIRE(p.window >= 0, "%s: window must be >= 0 (0: none), got %lld", op,
                (long long)p.window);
    MLA_REQUIRE(std::isfinite(p.softmax_scale), "%s: softmax_scale must be finite, got %g", op,
                double(p.softmax_scale));

    bool alias = p.v != nullptr && p.v == p.k;
    if (alias) {
        MLA_REQUIRE(p.d_v <= p.d_qk, "%s: d_v must be <= d_qk when v aliases k, got d_v %lld, "
                    "d_qk %lld", op, (long long)p.d_v, (long long)p.d_qk);
        for (int i = varlen ? 1 : 0; i < 3; ++i)
            MLA_REQUIRE(p.v_stride[i] == p.k_stride[i], "%s: v_stride[%d] must equal "
                        "k_stride[%d] (%lld) when v aliases k, got %lld", op, i, i,
                        (long long)p.k_stride[i], (long long)p.v_stride[i]);
        MLA_REQUIRE(p.dv == nullptr, "%s: dv must be NULL when v aliases k (the value gradient "
                    "adds into dk), got a pointer", op);
    } else {
        MLA_TRY(check_pointer(p.dv, rows_k > 0, op, "dv"));
    }
    bool any_q = rows_q > 0, any_k = rows_k > 0;
    MLA_TRY(check_pointer(p.q, any_q, op, "q"));
    MLA_TRY(check_pointer(p.out, any_q, op, "out"));
    MLA_TRY(check_pointer(p.lse, any_q, op, "lse"));
    MLA_TRY(check_pointer(p.dout, any_q, op, "dout"));
    MLA_TRY(check_pointer(p.dq, any_q, op, "dq"));
    MLA_TRY(check_pointer(p.k, any_k, op, "k"));
    MLA_TRY(check_pointer(p.v, any_k, op, "v"));
    MLA_TRY(check_pointer(p.dk, any_k, op, "dk"));
    MLA_TRY(check_strides(p.q_stride, 3, op, "q_stride"));
    MLA_TRY(check_strides(p.k_stride, 3, op, "k_stride"));
    MLA_TRY(check_strides(p.v_stride, 3, op, "v_stride"));
    MLA_TRY(check_strides(p.out_stride, 3, op, "out_stride"));
    MLA_TRY(check_strides(p.dout_stride, 3, op, "dout_stride"));
    MLA_TRY(check_rotation_desc(p.out_rotation, p.d_v, op));

    MLA_TRY(check_exec(p.exec, op));

    if (varlen) {
        MLA_TRY(check_cu_seqlens(p.cu_seqlens_q, p.b, p.total_q, op, "cu_seqlens_q", "total_q"));
        MLA_TRY(check_cu_seqlens(p.cu_seqlens_k, p.b, p.total_k, op, "cu_seqlens_k", "total_k"));
    }
    MLA_TRY(check_positions(p.out_rotation, rows_q, op));
    return MLA_OK;
}

mla_status check_sparse_prefill(const mla_sparse_prefill_params &p, const char *op) {
    MLA_TRY(check_dtype(p.dtype, op));
    MLA_REQUIRE(p.s_q >= 0, "%s: s_q must be >= 0, got %lld", op, (long long)p.s_q);
    MLA_REQUIRE(p.s_kv >= 0, "%s: s_kv must be >= 0, got %lld", op, (long long)p.s_kv);
    MLA_TRY(check_heads(p.h_q, p.h_kv, op));
    MLA_REQUIRE(p.d_qk >= 1, "%s: d_qk must be >= 1, got %lld", op, (long long)p.d_qk);
    MLA_REQUIRE(p.d_v >= 1 && p.d_v <= p.d_qk,
                "%s: d_v must be in [1, d_qk] (the value is the first d_v dims of a kv row), "
                "got d_v %lld, d_qk %lld", op, (long long)p.d_v, (long long)p.d_qk);
    MLA_REQUIRE(p.topk >= 0, "%s: topk must be >= 0, got %lld", op, (long long)p.topk);
    MLA_REQUIRE(std::isfinite(p.softmax_scale), "%s: softmax_scale must be finite, got %g", op,
                double(p.softmax_scale));
    bool any_q = p.s_q > 0, any_kv = p.s_kv > 0;
    MLA_TRY(check_pointer(p.q, any_q, op, "q"));
    MLA_TRY(check_pointer(p.indices, any_q && p.topk > 0, op, "indices"));
    MLA_TRY(check_pointer(p.out, any_q, op, "out"));
    MLA_TRY(check_pointer(p.lse, any_q, op, "lse"));
    MLA_TRY(check_pointer(p.dout, any_q, op, "dout"));
    MLA_TRY(check_pointer(p.dq, any_q, op, "dq"));
    MLA_TRY(check_pointer(p.kv, any_kv, op, "kv"));
    MLA_TRY(check_pointer(p.dkv, any_kv, op, "dkv"));
    MLA_TRY(check_strides(p.q_stride, 2, op, "q_stride"));
    MLA_TRY(check_strides(p.kv_stride, 2, op, "kv_stride"));
    MLA_TRY(check_strides(p.indices_stride, 2, op, "indices_stride"));
    MLA_TRY(check_strides(p.out_stride, 2, op, "out_stride"));
    MLA_TRY(check_strides(p.dout_stride, 2, op, "dout_stride"));
    MLA_TRY(check_rotation_desc(p.out_rotation, p.d_v, op));

    MLA_TRY(check_exec(p.exec, op));

    MLA_TRY(check_positions(p.out_rotation, p.s_q, op));
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_attention_bwd(const mla_attention_params *p) {
    const char *op = "mla_attention_bwd";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null, got NULL", op);
    MLA_TRY(check_attention(*p, op));
    return run_kernel(op, [&] { mla::cpu::attention_backward(*p); });
}

extern "C" mla_status mla_sparse_prefill_bwd(const mla_sparse_prefill_params *p) {
    const char *op = "mla_sparse_prefill_bwd";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null, got NULL", op);
    MLA_TRY(check_sparse_prefill(*p, op));
    return run_kernel(op, [&] { mla::cpu::sparse_prefill_backward(*p); });
}
