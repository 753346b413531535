// Entry point of sparse prefill, forward (ops.md section 3): argument checks, then the CPU
// kernel. The backward entry point lives with the other backward ops (api/backward.cpp).
#include "api/forward_checks.h"
#include "cpu/kernels.h"

namespace chk = mla::fwd_checks;

extern "C" mla_status mla_sparse_prefill_fwd(const mla_sparse_prefill_params *p) {
    const char *op = "mla_sparse_prefill_fwd";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(chk::dtype(p->dtype, op));
    MLA_TRY(chk::size(p->s_q, op, "s_q"));
    MLA_TRY(chk::size(p->s_kv, op, "s_kv"));
    MLA_TRY(chk::heads(p->h_q, p->h_kv, op));
    MLA_TRY(chk::head_dims(p->d_qk, p->d_v, op));
    MLA_TRY(chk::size(p->topk, op, "topk"));

    const bool has_rows = p->s_q > 0;
    MLA_TRY(chk::pointer(p->q, has_rows, op, "q"));
    MLA_TRY(chk::pointer(p->kv, has_rows && p->s_kv > 0, op, "kv"));
    MLA_TRY(chk::pointer(p->indices, has_rows && p->topk > 0, op, "indices"));
    MLA_TRY(chk::pointer(p->out, has_rows, op, "out"));
    MLA_TRY(chk::pointer(p->lse, has_rows, op, "lse"));
    MLA_TRY(chk::strides(p->q_stride, 2, op, "q_stride"));
    MLA_TRY(chk::strides(p->kv_stride, 2, op, "kv_stride"));
    MLA_TRY(chk::strides(p->indices_stride, 2, op, "indices_stride"));
    MLA_TRY(chk::strides(p->out_stride, 2, op, "out_stride"));
    MLA_TRY(chk::scale(p->softmax_scale, op));
    MLA_TRY(chk::rotation(p->out_rotation, p->d_v, op));
    MLA_TRY(chk::exec(p->exec, op));

    if (!has_rows) return MLA_OK;
    MLA_TRY(chk::positions(p->out_rotation, p->s_q, op));
    return chk::run_kernel(op, [&] { mla::cpu::sparse_prefill_fwd(*p); });
}
