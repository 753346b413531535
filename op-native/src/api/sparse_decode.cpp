// Sparse decode (ops.md section 2): the one check of its arguments, then the CPU kernel, or
// the GPU (src/cuda/sparse_attend.cu) when exec.device >= 0; its plan and workspace queries.
#include <cstdio>
#include "api/forward_checks.h"
#include "api/gpu_dispatch.h"
#include "common/cache.h"
#include "cpu/kernels.h"
#ifdef MLA4J_WITH_CUDA
#include "cuda/sparse_attend.h"
#endif

namespace {

namespace chk = mla::fwd_checks;

// One key set: its cache (h_kv = 1; an empty one may come without memory), indices and the
// value dims its layout implies. Fills `keys` with the set as the kernel will read it.
mla_status check_key_set(const mla_sparse_decode_params &p, const mla_sparse_keys &in,
                         const char *op, const char *arg, mla_sparse_keys *keys,
                         mla::CacheLayout *layout) {
    static const char no_data = 0;
    *keys = in;
    if (!keys->cache.data && keys->cache.num_blocks == 0) keys->cache.data = &no_data;
    char name[32];
    std::snprintf(name, sizeof name, "%s.cache", arg);
    MLA_TRY(mla::check_cache(keys->cache, p.d_qk, 1, op, name, layout));
    if (layout->kind == MLA_CACHE_V32)
        MLA_REQUIRE(p.d_v == layout->d_nope,
                    "%s: d_v must be %d (the d_nope of the V32 %s, whose value is the latent "
                    "part), got %lld", op, layout->d_nope, name, (long long)p.d_v);
    if (layout->kind == MLA_CACHE_MODEL1)
        MLA_REQUIRE(p.d_v == layout->d_qk,
                    "%s: d_v must be %lld (the d_qk of the MODEL1 %s, whose value is the whole "
                    "row), got %lld", op, (long long)layout->d_qk, name, (long long)p.d_v);
    std::snprintf(name, sizeof name, "%s.topk", arg);
    MLA_TRY(chk::topk(in.topk, op, name));
    std::snprintf(name, sizeof name, "%s.indices", arg);
    MLA_TRY(chk::pointer(in.indices, p.b > 0 && p.s_q > 0 && in.topk > 0, op, name));
    std::snprintf(name, sizeof name, "%s.indices_stride", arg);
    MLA_TRY(chk::strides(in.indices_stride, 2, op, name));
    return MLA_OK;
}

// Every check of a call that needs no data. `q` gets the key sets as the kernels read them
// (an empty cache may come without memory).
mla_status check(const mla_sparse_decode_params &p, const char *op, mla_sparse_decode_params *q,
                 mla::CacheLayout *keys_layout, mla::CacheLayout *extra_layout, bool *has_extra) {
    MLA_TRY(chk::dtype(p.dtype, op));
    MLA_TRY(chk::size(p.b, op, "b"));
    MLA_TRY(chk::size(p.s_q, op, "s_q"));
    MLA_TRY(chk::positive(p.h_q, op, "h_q"));
    MLA_TRY(chk::head_dims(p.d_qk, p.d_v, op));
    *q = p;
    MLA_TRY(check_key_set(p, p.keys, op, "keys", &q->keys, keys_layout));
    *has_extra = p.extra.cache.data != nullptr;
    if (*has_extra) MLA_TRY(check_key_set(p, p.extra, op, "extra", &q->extra, extra_layout));
    const bool has_rows = p.b > 0 && p.s_q > 0;
    MLA_TRY(chk::pointer(p.q, has_rows, op, "q"));
    MLA_TRY(chk::pointer(p.out, has_rows, op, "out"));
    MLA_TRY(chk::pointer(p.lse, has_rows, op, "lse"));
    MLA_TRY(chk::strides(p.q_stride, 3, op, "q_stride"));
    MLA_TRY(chk::strides(p.out_stride, 3, op, "out_stride"));
    MLA_TRY(chk::scale(p.softmax_scale, op));
    MLA_TRY(chk::rotation(p.out_rotation, p.d_v, op));
    MLA_TRY(chk::threads(p.exec, op));
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_sparse_decode(const mla_sparse_decode_params *p) {
    const char *op = "mla_sparse_decode";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    mla_sparse_decode_params q;
    mla::CacheLayout keys_layout, extra_layout;
    bool has_extra = false;
    MLA_TRY(check(*p, op, &q, &keys_layout, &extra_layout, &has_extra));
    if (p->exec.device >= 0) {
        // Device pointers (the call's own, not q's): nothing they point to is read here.
        MLA_TRY(mla::api::no_gpu(op, p->exec.device));
#ifdef MLA4J_WITH_CUDA
        return mla::cuda::sparse_decode(*p);
#endif
    }
    if (p->b == 0 || p->s_q == 0) return MLA_OK;
    MLA_TRY(chk::positions(p->out_rotation, p->b * p->s_q, op));
    return chk::run_kernel(op, [&] {
        mla::cpu::sparse_decode_fwd(q, keys_layout, has_extra ? &extra_layout : nullptr);
    });
}

extern "C" mla_status mla_sparse_decode_plan(const mla_sparse_decode_params *p, mla_plan_info *info) {
    const char *op = "mla_sparse_decode_plan";
    if (!p || !info) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params and info must not be null", op);
    mla_sparse_decode_params given = *p;  // pointers not given yet: placeholders (the extra
    mla::api::fill_null(given.q);          // set is present only with its cache data)
    mla::api::fill_null(given.out);
    mla::api::fill_null(given.lse);
    mla::api::fill_null(given.keys.cache.data);
    mla::api::fill_null(given.keys.indices);
    if (given.extra.cache.data) mla::api::fill_null(given.extra.indices);
    p = &given;
    mla_sparse_decode_params q;
    mla::CacheLayout keys_layout, extra_layout;
    bool has_extra = false;
    MLA_TRY(check(*p, op, &q, &keys_layout, &extra_layout, &has_extra));
    if (p->exec.device < 0) {
        mla::api::cpu_plan(info);
        return MLA_OK;
    }
    MLA_TRY(mla::api::no_gpu(op, p->exec.device));
#ifdef MLA4J_WITH_CUDA
    return mla::cuda::sparse_decode_plan(*p, info);
#endif
    return MLA_OK;  // not reached: no_gpu refuses without CUDA
}

extern "C" int64_t mla_sparse_decode_workspace_size(const mla_sparse_decode_params *p) {
    return mla::api::workspace_from_plan(p, mla_sparse_decode_plan);
}
