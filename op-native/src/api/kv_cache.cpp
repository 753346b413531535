// Entry points of the KV cache ops (ops.md section 5): argument checks, then the CPU kernels,
// or with exec.device >= 0 the CUDA kernels (src/cuda/kv_append.cu, src/cuda/common/kv_quant.cu).
// Every argument the host can see is checked before anything is written.
#include <algorithm>
#include <exception>
#include <utility>
#include <vector>
#include "api/device_dispatch.h"
#include "common/cache.h"
#include "common/error.h"
#include "cpu/misc_kernels.h"
#ifdef MLA4J_WITH_CUDA
#include "cuda/common/kv_quant.h"
#include "cuda/kv_append.h"
#endif

namespace {

using mla::CacheLayout;
using mla::fail;

const char *kind_name(int32_t kind) {
    switch (kind) {
        case MLA_CACHE_PLAIN: return "PLAIN";
        case MLA_CACHE_V32: return "V32";
        case MLA_CACHE_MODEL1: return "MODEL1";
        default: return "unknown";
    }
}

// Checks shared by quantize and dequantize. `cache` is the cache argument with `data` set to
// the buffer the op reads (dequantize) or writes (quantize).
mla_status check_quant(const mla_quant_params &p, const mla_cache &cache, const char *op,
                       CacheLayout *layout) {
    MLA_REQUIRE(cache.kind == MLA_CACHE_V32 || cache.kind == MLA_CACHE_MODEL1,
                "%s: cache.kind must be 1 (V32) or 2 (MODEL1), got %d (%s); a PLAIN cache holds "
                "the values themselves and needs no quantisation", op, cache.kind,
                kind_name(cache.kind));
    MLA_REQUIRE(mla::is_float_dtype(p.dtype),
                "%s: dtype of kv must be float32, float64, float16 or bfloat16, got %s", op,
                mla::dtype_name(p.dtype));
    // d_qk comes from the layout; a bad layout is reported by check_cache.
    CacheLayout guess;
    int64_t d_qk = mla::fp8_layout(cache.kind, std::max<int64_t>(cache.block_size, 1),
                                   cache.d_nope, cache.d_rope, cache.tile, &guess)
                       ? guess.d_qk
                       : 0;
    MLA_TRY(mla::check_cache(cache, d_qk, 1, op, "cache", layout));
    MLA_REQUIRE(p.kv != nullptr || cache.num_blocks == 0, "%s: kv must not be null", op);
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_kv_quantize(const mla_quant_params *p) {
    const char *op = "mla_kv_quantize";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    mla_cache out = p->cache;
    out.data = p->cache_out ? p->cache_out : p->cache.data;
    MLA_REQUIRE(out.data != nullptr, "%s: cache_out (or cache.data) must not be null", op);
    CacheLayout l;
    MLA_TRY(check_quant(*p, out, op, &l));
    if (p->exec.device >= 0) {
#ifdef MLA4J_WITH_CUDA
        return mla::run_on_device(p->exec, op, [&] { return mla::cuda::kv_quantize(*p, out, l); });
#else
        return mla::run_on_device(p->exec, op, [] { return MLA_OK; });
#endif
    }
    void *dst = const_cast<void *>(out.data);
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::kv_quantize(*p, l, dst); });
}

extern "C" mla_status mla_kv_dequantize(const mla_quant_params *p) {
    const char *op = "mla_kv_dequantize";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    CacheLayout l;
    MLA_TRY(check_quant(*p, p->cache, op, &l));
    if (p->exec.device >= 0) {
#ifdef MLA4J_WITH_CUDA
        return mla::run_on_device(p->exec, op, [&] { return mla::cuda::kv_dequantize(*p, l); });
#else
        return mla::run_on_device(p->exec, op, [] { return MLA_OK; });
#endif
    }
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::kv_dequantize(*p, l); });
}

namespace {

// Checks of the append arguments that read no pointed-to data: both the CPU and the GPU path
// make them.
mla_status check_append_args(const mla_append_params &p, const mla_cache &cache, const char *op,
                             CacheLayout *layout) {
    MLA_REQUIRE(mla::is_float_dtype(p.dtype),
                "%s: dtype of new_kv must be float32, float64, float16 or bfloat16, got %s", op,
                mla::dtype_name(p.dtype));
    MLA_REQUIRE(p.b >= 0, "%s: b must be >= 0, got %lld", op, (long long)p.b);
    MLA_REQUIRE(p.n_new >= 0, "%s: n_new must be >= 0, got %lld", op, (long long)p.n_new);
    MLA_REQUIRE(p.d_qk >= 1, "%s: d_qk must be >= 1, got %lld", op, (long long)p.d_qk);
    MLA_TRY(mla::check_cache(cache, p.d_qk, 0, op, "cache", layout));
    if (cache.kind != MLA_CACHE_PLAIN)
        MLA_REQUIRE(cache.h_kv == 0 || cache.h_kv == 1,
                    "%s: cache.h_kv must be 1 for a %s cache (it holds one KV head), got %lld", op,
                    kind_name(cache.kind), (long long)cache.h_kv);
    if (p.b * p.n_new == 0) return MLA_OK;
    MLA_REQUIRE(p.new_kv != nullptr, "%s: new_kv must not be null", op);
    MLA_REQUIRE(p.block_table != nullptr, "%s: block_table must not be null", op);
    MLA_REQUIRE(p.cache_seqlens != nullptr, "%s: cache_seqlens must not be null", op);
    MLA_REQUIRE(p.max_blocks_per_seq >= 1, "%s: max_blocks_per_seq must be >= 1, got %lld", op,
                (long long)p.max_blocks_per_seq);
    MLA_REQUIRE(p.block_table_stride >= 0, "%s: block_table_stride must be >= 0, got %lld", op,
                (long long)p.block_table_stride);
    MLA_REQUIRE(p.new_kv_stride[0] >= 0 && p.new_kv_stride[1] >= 0,
                "%s: new_kv_stride must be >= 0, got {%lld, %lld}", op,
                (long long)p.new_kv_stride[0], (long long)p.new_kv_stride[1]);
    return MLA_OK;
}

// Host data: resolves the slot (block * block_size + offset) of every new token into `slots`,
// so that the kernel writes only after everything is known valid.
mla_status resolve_slots(const mla_append_params &p, const mla_cache &cache, const char *op,
                         std::vector<int64_t> *slots) {
    int64_t total = p.b * p.n_new;
    if (total == 0) return MLA_OK;
    int64_t bs = cache.block_size;
    int64_t capacity = p.max_blocks_per_seq * bs;
    slots->resize(size_t(total));
    for (int64_t i = 0; i < p.b; ++i) {
        int64_t len = p.cache_seqlens[i];
        MLA_REQUIRE(len >= 0, "%s: cache_seqlens[%lld] must be >= 0, got %lld", op, (long long)i,
                    (long long)len);
        MLA_REQUIRE(len + p.n_new <= capacity,
                    "%s: cache_seqlens[%lld] + n_new must be <= max_blocks_per_seq * block_size "
                    "= %lld, got %lld + %lld", op, (long long)i, (long long)capacity,
                    (long long)len, (long long)p.n_new);
        const int32_t *row = p.block_table + i * p.block_table_stride;
        for (int64_t j = 0; j < p.n_new; ++j) {
            int64_t pos = len + j;
            int64_t block = row[pos / bs];
            MLA_REQUIRE(block >= 0 && block < cache.num_blocks,
                        "%s: block_table[%lld][%lld] must be in [0, num_blocks = %lld), got %lld",
                        op, (long long)i, (long long)(pos / bs), (long long)cache.num_blocks,
                        (long long)block);
            (*slots)[size_t(i * p.n_new + j)] = block * bs + pos % bs;
        }
    }
    // Two new tokens on one slot would race and leave the cache depending on timing.
    std::vector<std::pair<int64_t, int64_t>> order(static_cast<size_t>(total));
    for (int64_t i = 0; i < total; ++i) order[size_t(i)] = {(*slots)[size_t(i)], i};
    std::sort(order.begin(), order.end());
    for (size_t i = 1; i < order.size(); ++i) {
        if (order[i].first != order[i - 1].first) continue;
        int64_t a = order[i - 1].second, c = order[i].second;
        return fail(MLA_ERR_INVALID_ARGUMENT,
                    "%s: new tokens must go to distinct cache slots, got token %lld of request "
                    "%lld and token %lld of request %lld both at block %lld offset %lld",
                    op, (long long)(a % p.n_new), (long long)(a / p.n_new),
                    (long long)(c % p.n_new), (long long)(c / p.n_new),
                    (long long)(order[i].first / bs), (long long)(order[i].first % bs));
    }
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_kv_append(const mla_append_params *p) {
    const char *op = "mla_kv_append";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    mla_cache out = p->cache;
    out.data = p->cache_out ? p->cache_out : p->cache.data;
    MLA_REQUIRE(out.data != nullptr, "%s: cache_out (or cache.data) must not be null", op);
    CacheLayout l;
    MLA_TRY(check_append_args(*p, out, op, &l));
#ifdef MLA4J_WITH_CUDA
    // Device pointers: the CUDA path never reads them on the host; what needs their data is
    // decided on the device (include/mla/mla.h).
    if (p->exec.device >= 0) {
        if (mla_cuda_device_count() == 0)
            return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: no CUDA device is available",
                        op, p->exec.device);
        return mla::cuda::kv_append(*p, out, l);
    }
#endif
    std::vector<int64_t> slots;
    try {
        if (p->exec.device < 0) MLA_TRY(resolve_slots(*p, out, op, &slots));
    } catch (const std::exception &) {
        return fail(MLA_ERR_OUT_OF_MEMORY, "%s: out of host memory for the slots of %lld tokens",
                    op, (long long)(p->b * p->n_new));
    }
    void *dst = const_cast<void *>(out.data);
    return mla::cpu::run_on_cpu(p->exec, op,
                                [&] { mla::cpu::kv_append(*p, l, dst, slots.data()); });
}
