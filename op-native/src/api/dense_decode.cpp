// Dense decode over a paged KV cache (ops.md section 1): the one check of its arguments, then
// the CPU kernel, or the GPU (src/cuda/dense_decode.cu) when exec.device >= 0; its plan and
// workspace queries.
#include "api/forward_checks.h"
#include "api/gpu_dispatch.h"
#include "common/cache.h"
#include "cpu/kernels.h"
#ifdef MLA4J_WITH_CUDA
#include "cuda/dense_decode.h"
#endif

namespace {

namespace chk = mla::fwd_checks;

// Every check of a call that needs no data. `cache` is the cache as the kernels read it (an
// empty cache may come without memory: no token of it can be addressed).
mla_status check(const mla_dense_decode_params &p, const char *op, mla_cache *cache,
                 mla::CacheLayout *layout) {
    MLA_TRY(chk::dtype(p.dtype, op));
    MLA_TRY(chk::size(p.b, op, "b"));
    MLA_TRY(chk::size(p.s_q, op, "s_q"));
    MLA_TRY(chk::positive(p.h_q, op, "h_q"));
    MLA_TRY(chk::head_dims(p.d_qk, p.d_v, op));
    *cache = p.cache;
    static const char no_data = 0;
    if (!cache->data && cache->num_blocks == 0) cache->data = &no_data;
    MLA_TRY(mla::check_cache(*cache, p.d_qk, 0, op, "cache", layout));
    const int64_t h_kv = layout->kind == MLA_CACHE_PLAIN ? cache->h_kv : 1;
    MLA_TRY(chk::heads(p.h_q, h_kv, op));
    const bool has_rows = p.b > 0 && p.s_q > 0;
    MLA_TRY(chk::pointer(p.q, has_rows, op, "q"));
    MLA_TRY(chk::pointer(p.out, has_rows, op, "out"));
    MLA_TRY(chk::pointer(p.lse, has_rows, op, "lse"));
    MLA_TRY(chk::pointer(p.cache_seqlens, p.b > 0, op, "cache_seqlens"));
    MLA_TRY(chk::pointer(p.block_table, p.b > 0 && p.max_blocks_per_seq > 0, op, "block_table"));
    MLA_TRY(chk::strides(p.q_stride, 3, op, "q_stride"));
    MLA_TRY(chk::strides(p.out_stride, 3, op, "out_stride"));
    MLA_TRY(chk::size(p.max_blocks_per_seq, op, "max_blocks_per_seq"));
    MLA_TRY(chk::size(p.block_table_stride, op, "block_table_stride"));
    MLA_TRY(chk::scale(p.softmax_scale, op));
    MLA_TRY(chk::rotation(p.out_rotation, p.d_v, op));
    MLA_TRY(chk::threads(p.exec, op));
    return MLA_OK;
}

// Host data (CPU path): every sequence fits its block-table row and every block it uses is in
// the cache.
mla_status check_block_table(const mla_dense_decode_params &p, const char *op) {
    const int64_t capacity = p.max_blocks_per_seq * p.cache.block_size;
    for (int64_t b = 0; b < p.b; ++b) {
        const int64_t len = p.cache_seqlens[b];
        MLA_REQUIRE(len >= 0 && len <= capacity,
                    "%s: cache_seqlens[%lld] must be in [0, %lld] (max_blocks_per_seq %lld * "
                    "block_size %lld), got %lld", op, (long long)b, (long long)capacity,
                    (long long)p.max_blocks_per_seq, (long long)p.cache.block_size,
                    (long long)len);
        const int64_t used = (len + p.cache.block_size - 1) / p.cache.block_size;
        const int32_t *row = p.block_table + b * p.block_table_stride;
        for (int64_t k = 0; k < used; ++k)
            MLA_REQUIRE(row[k] >= 0 && row[k] < p.cache.num_blocks,
                        "%s: block_table[%lld][%lld] must be a block id in [0, %lld) (request "
                        "%lld holds %lld tokens), got %d", op, (long long)b, (long long)k,
                        (long long)p.cache.num_blocks, (long long)b, (long long)len, row[k]);
    }
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_dense_decode(const mla_dense_decode_params *p) {
    const char *op = "mla_dense_decode";
    if (!p) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    mla_cache cache;
    mla::CacheLayout layout;
    MLA_TRY(check(*p, op, &cache, &layout));
    if (p->exec.device >= 0) {
        // Device pointers: nothing they point to is read on the host.
        MLA_TRY(mla::api::no_gpu(op, p->exec.device));
#ifdef MLA4J_WITH_CUDA
        return mla::cuda::dense_decode(*p);
#endif
    }
    if (p->b == 0) return MLA_OK;
    MLA_TRY(check_block_table(*p, op));
    if (p->s_q == 0) return MLA_OK;
    MLA_TRY(chk::positions(p->out_rotation, p->b * p->s_q, op));

    mla_dense_decode_params q = *p;
    q.cache = cache;
    return chk::run_kernel(op, [&] { mla::cpu::dense_decode_fwd(q, layout); });
}

extern "C" mla_status mla_dense_decode_plan(const mla_dense_decode_params *p, mla_plan_info *info) {
    const char *op = "mla_dense_decode_plan";
    if (!p || !info) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "%s: params and info must not be null", op);
    mla_dense_decode_params q = *p;  // pointers not given yet: placeholders
    mla::api::fill_null(q.q);
    mla::api::fill_null(q.out);
    mla::api::fill_null(q.lse);
    mla::api::fill_null(q.cache.data);
    mla::api::fill_null(q.block_table);
    mla::api::fill_null(q.cache_seqlens);
    p = &q;
    mla_cache cache;
    mla::CacheLayout layout;
    MLA_TRY(check(*p, op, &cache, &layout));
    if (p->exec.device < 0) {
        mla::api::cpu_plan(info);
        return MLA_OK;
    }
    MLA_TRY(mla::api::no_gpu(op, p->exec.device));
#ifdef MLA4J_WITH_CUDA
    return mla::cuda::dense_decode_plan(*p, info);
#endif
    return MLA_OK;  // not reached: no_gpu refuses without CUDA
}

extern "C" int64_t mla_dense_decode_workspace_size(const mla_dense_decode_params *p) {
    return mla::api::workspace_from_plan(p, mla_dense_decode_plan);
}
