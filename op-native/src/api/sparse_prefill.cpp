// Sparse prefill, forward and backward (ops.md section 3): the one check of their arguments,
// then the CPU kernels, or the GPU (src/cuda/sparse_attend.cu) for the forward when
// exec.device >= 0; the forward's plan and workspace queries.
#include "api/forward_checks.h"
#include "api/gpu_dispatch.h"
#include "cpu/backward_kernels.h"
#include "cpu/kernels.h"
#ifdef MLA4J_WITH_CUDA
#include "cuda/sparse_attend.h"
#endif

namespace {

namespace chk = mla::fwd_checks;

// Every check of a call that needs no data; `backward` adds dout, dq, dkv.
mla_status check(const mla_sparse_prefill_params &p, const char *op, bool backward) {
    MLA_TRY(chk::dtype(p.dtype, op));
    MLA_TRY(chk::size(p.s_q, op, "s_q"));
    MLA_TRY(chk::size(p.s_kv, op, "s_kv"));
    MLA_TRY(chk::heads(p.h_q, p.h_kv, op));
    MLA_TRY(chk::head_dims(p.d_qk, p.d_v, op));
    MLA_TRY(chk::topk(p.topk, op, "topk"));
    const bool any_q = p.s_q > 0, any_kv = p.s_kv > 0;
    MLA_TRY(chk::pointer(p.q, any_q, op, "q"));
    MLA_TRY(chk::pointer(p.kv, any_q && any_kv, op, "kv"));
    MLA_TRY(chk::pointer(p.indices, any_q && p.topk > 0, op, "indices"));
    MLA_TRY(chk::pointer(p.out, any_q, op, "out"));
    MLA_TRY(chk::pointer(p.lse, any_q, op, "lse"));
    MLA_TRY(chk::strides(p.q_stride, 2, op, "q_stride"));
    MLA_TRY(chk::strides(p.kv_stride, 2, op, "kv_stride"));
    MLA_TRY(chk::strides(p.indices_stride, 2, op, "indices_stride"));
    MLA_TRY(chk::strides(p.out_stride, 2, op, "out_stride"));
    if (backward) {
        MLA_TRY(chk::pointer(p.kv, any_kv, op, "kv"));
        MLA_TRY(chk::pointer(p.dout, any_q, op, "dout"));
        MLA_TRY(chk::pointer(p.dq, any_q, op, "dq"));
        MLA_TRY(chk::pointer(p.dkv, any_kv, op, "dkv"));
        MLA_TRY(chk::strides(p.dout_stride, 2, op, "dout_stride"));
    }
    MLA_TRY(chk::scale(p.softmax_scale, op));
    MLA_TRY(chk::rotation(p.out_rotation, p.d_v, op));
    MLA_TRY(chk::threads(p.exec, op));
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_sparse_prefill_fwd(const mla_sparse_prefill_params *p) {
    const char *op = "mla_sparse_prefill_fwd";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(check(*p, op, false));
    if (p->exec.device >= 0) {
        MLA_TRY(mla::api::no_gpu(op, p->exec.device));
#ifdef MLA4J_WITH_CUDA
        return mla::cuda::sparse_prefill_fwd(*p);
#endif
    }
    if (p->s_q == 0) return MLA_OK;
    MLA_TRY(chk::positions(p->out_rotation, p->s_q, op));
    return chk::run_kernel(op, [&] { mla::cpu::sparse_prefill_fwd(*p); });
}

extern "C" mla_status mla_sparse_prefill_bwd(const mla_sparse_prefill_params *p) {
    const char *op = "mla_sparse_prefill_bwd";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(check(*p, op, true));
    MLA_TRY(chk::exec(p->exec, op));
    MLA_TRY(chk::positions(p->out_rotation, p->s_q, op));
    return chk::run_kernel(op, [&] { mla::cpu::sparse_prefill_backward(*p); });
}

extern "C" mla_status mla_sparse_prefill_fwd_plan(const mla_sparse_prefill_params *p,
                                                  mla_plan_info *info) {
    const char *op = "mla_sparse_prefill_fwd_plan";
    if (!p || !info) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params and info must not be null", op);
    mla_sparse_prefill_params given = *p;  // pointers not given yet: placeholders
    mla::api::fill_null(given.q);
    mla::api::fill_null(given.kv);
    mla::api::fill_null(given.indices);
    mla::api::fill_null(given.out);
    mla::api::fill_null(given.lse);
    p = &given;
    MLA_TRY(check(*p, op, false));
    if (p->exec.device < 0) {
        mla::api::cpu_plan(info);
        return MLA_OK;
    }
    MLA_TRY(mla::api::no_gpu(op, p->exec.device));
#ifdef MLA4J_WITH_CUDA
    return mla::cuda::sparse_prefill_fwd_plan(*p, info);
#endif
    return MLA_OK;  // not reached: no_gpu refuses without CUDA
}

extern "C" int64_t mla_sparse_prefill_fwd_workspace_size(const mla_sparse_prefill_params *p) {
    return mla::api::workspace_from_plan(p, mla_sparse_prefill_fwd_plan);
}
