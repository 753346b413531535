// KV append on a CUDA device (ops.md section 5). One warp per new token: it resolves the
// token's slot from the device-resident cache_seqlens and block table, applies the rules of
// include/mla/mla.h for what the host cannot check (a request that does not fit, a block id
// outside the cache, two tokens on one slot: nothing is written for those), and writes the
// row the way the CPU path does (common/cache.h write_token), bit for bit
// (common/convert.cuh): PLAIN rows converted to the cache dtype, FP8 rows quantised per tile
// with the power-of-two scale of the tile's largest magnitude.
#include "cuda/common/check.cuh"
#include "cuda/common/convert.cuh"
#include "cuda/common/device_scope.cuh"
#include "cuda/kv_append.h"
#include "cuda/runtime.h"

namespace mla {
namespace cuda {
namespace {

constexpr int kAppendWarps = 4;  // tokens per CTA

struct AppendArgs {
    int32_t in_dtype, kind, cache_dtype;
    int32_t d_nope, d_rope, tile, n_scales;
    int64_t b, n_new, d_qk, heads;
    const void *src;
    int64_t src_stride0, src_stride1;
    void *dst;
    int64_t num_blocks, block_size, block_stride, token_stride, head_stride;
    int64_t data_row_bytes, scale_row_bytes, block_bytes;
    const int32_t *table;
    int64_t table_stride, max_blocks;
    const int32_t *seqlens;
};

// Whether a request's new tokens fit its block-table row (a negative length never does).
__device__ __forceinline__ bool request_fits(const AppendArgs &a, int64_t len) {
    return len >= 0 && len + a.n_new <= a.max_blocks * a.block_size;
}

// Whether another new token of a request that fits maps to slot (blk, off) too. Token (i, pos)
// is the caller's own. The lanes split the requests; for request k only its positions
// q = off (mod block_size) in [len_k, len_k + n_new) can land on offset off.
__device__ bool slot_shared(const AppendArgs &a, int64_t i, int64_t pos, int64_t blk,
                            int64_t off, int lane) {
    const int64_t bs = a.block_size;
    bool dup = false;
    for (int64_t k = lane; k < a.b && !dup; k += 32) {
        const int64_t lk = a.seqlens[k];
        if (!request_fits(a, lk)) continue;
        const int64_t first = lk + (off - lk % bs + bs) % bs;
        for (int64_t q = first; q < lk + a.n_new; q += bs) {
            if (k == i && q == pos) continue;
            if (a.table[k * a.table_stride + q / bs] == blk) {
                dup = true;
                break;
            }
        }
    }
    return __any_sync(0xffffffffu, dup);
}

__device__ void write_plain(const AppendArgs &a, int64_t src0, int64_t blk, int64_t off,
                            int lane) {
    const int64_t dst0 = blk * a.block_stride + off * a.token_stride;
    for (int64_t h = 0; h < a.heads; ++h)
        for (int64_t e = lane; e < a.d_qk; e += 32)
            conv::store_double(a.dst, a.cache_dtype, dst0 + h * a.head_stride + e,
                               conv::load_double(a.src, a.in_dtype, src0 + h * a.d_qk + e));
}

__device__ void write_fp8(const AppendArgs &a, int64_t src0, int64_t blk, int64_t off,
                          int lane) {
    uint8_t *bytes = static_cast<uint8_t *>(a.dst);
    uint8_t *row, *scale_dst, *rope;
    if (a.kind == MLA_CACHE_V32) {
        row = bytes + (blk * a.block_size + off) * a.data_row_bytes;
        scale_dst = row + a.d_nope;
        rope = row + a.d_nope + 4 * a.n_scales;
    } else {
        uint8_t *base = bytes + blk * a.block_bytes;
        row = base + off * a.data_row_bytes;
        scale_dst = base + a.block_size * a.data_row_bytes + off * a.scale_row_bytes;
        rope = row + a.d_nope;
        for (int64_t e = a.n_scales + lane; e < a.scale_row_bytes; e += 32) scale_dst[e] = 0;
    }
    for (int t = 0; t < a.n_scales; ++t) {
        const int64_t e0 = int64_t(t) * a.tile, e1 = e0 + a.tile;
        float amax = 0.0f;
        for (int64_t e = e0 + lane; e < e1; e += 32) {  // NaN never counts, as on the CPU
            const float v = fabsf(conv::load_float(a.src, a.in_dtype, src0 + e));
            amax = v > amax ? v : amax;
        }
        for (int s = 16; s > 0; s >>= 1) {
            const float o = __shfl_xor_sync(0xffffffffu, amax, s);
            amax = o > amax ? o : amax;
        }
        const float scale = conv::fp8_tile_scale(amax);
        for (int64_t e = e0 + lane; e < e1; e += 32)
            row[e] = conv::float_to_fp8_e4m3(conv::load_float(a.src, a.in_dtype, src0 + e) / scale);
        if (lane == 0) {
            if (a.kind == MLA_CACHE_V32) {
                const uint32_t u = conv::float_bits(scale);
                for (int k = 0; k < 4; ++k) scale_dst[4 * t + k] = uint8_t(u >> (8 * k));
            } else {
                int e;
                frexpf(scale, &e);  // scale = 0.5 * 2^e
                scale_dst[t] = uint8_t(e - 1 + 127);
            }
        }
    }
    for (int64_t e = lane; e < a.d_rope; e += 32) {
        const uint16_t v =
            conv::float_to_bf16(conv::load_float(a.src, a.in_dtype, src0 + a.d_nope + e));
        rope[2 * e] = uint8_t(v & 0xff);
        rope[2 * e + 1] = uint8_t(v >> 8);
    }
}

__global__ void __launch_bounds__(kAppendWarps * 32)
    kv_append_kernel(const __grid_constant__ AppendArgs a) {
    const int lane = threadIdx.x & 31;
    const int64_t tok = int64_t(blockIdx.x) * kAppendWarps + (threadIdx.x >> 5);
    if (tok >= a.b * a.n_new) return;  // whole warps leave together below as well
    const int64_t i = tok / a.n_new, j = tok % a.n_new;
    const int64_t len = a.seqlens[i];
    if (!request_fits(a, len)) return;
    const int64_t pos = len + j;
    const int64_t blk = a.table[i * a.table_stride + pos / a.block_size];
    if (blk < 0 || blk >= a.num_blocks) return;
    const int64_t off = pos % a.block_size;
    if (slot_shared(a, i, pos, blk, off, lane)) return;
    const int64_t src0 = i * a.src_stride0 + j * a.src_stride1;
    if (a.kind == MLA_CACHE_PLAIN)
        write_plain(a, src0, blk, off, lane);
    else
        write_fp8(a, src0, blk, off, lane);
}

}  // namespace

mla_status kv_append(const mla_append_params &p, const mla_cache &c, const CacheLayout &l) {
    const char *op = "mla_kv_append";
    const int n = device_count();
    MLA_REQUIRE(p.exec.device >= 0 && p.exec.device < n,
                "%s: exec.device must be in [0, %d), got %d", op, n, p.exec.device);
    const int64_t total = p.b * p.n_new;
    if (total == 0) return MLA_OK;

    DeviceScope scope;
    MLA_TRY(scope.enter(p.exec.device, op));
    MLA_TRY(device_pointer(p.new_kv, op, "new_kv"));
    MLA_TRY(device_pointer(c.data, op, p.cache_out ? "cache_out" : "cache.data"));
    MLA_TRY(device_pointer(p.block_table, op, "block_table"));
    MLA_TRY(device_pointer(p.cache_seqlens, op, "cache_seqlens"));

    AppendArgs a{};
    a.in_dtype = p.dtype;
    a.kind = l.kind;
    a.cache_dtype = c.dtype;
    a.d_nope = l.d_nope;
    a.d_rope = l.d_rope;
    a.tile = l.tile;
    a.n_scales = l.n_scales;
    a.b = p.b;
    a.n_new = p.n_new;
    a.d_qk = p.d_qk;
    a.heads = l.kind == MLA_CACHE_PLAIN ? c.h_kv : 1;
    a.src = p.new_kv;
    a.src_stride0 = p.new_kv_stride[0];
    a.src_stride1 = p.new_kv_stride[1];
    a.dst = const_cast<void *>(c.data);
    a.num_blocks = c.num_blocks;
    a.block_size = c.block_size;
    a.block_stride = c.block_stride;
    a.token_stride = c.token_stride;
    a.head_stride = c.head_stride;
    a.data_row_bytes = l.data_row_bytes;
    a.scale_row_bytes = l.scale_row_bytes;
    a.block_bytes = l.block_bytes;
    a.table = p.block_table;
    a.table_stride = p.block_table_stride;
    a.max_blocks = p.max_blocks_per_seq;
    a.seqlens = p.cache_seqlens;

    const int64_t blocks = (total + kAppendWarps - 1) / kAppendWarps;
    MLA_REQUIRE(blocks <= 0x7fffffff, "%s: b * n_new must be < 2^33, got %lld", op,
                (long long)total);
    kv_append_kernel<<<unsigned(blocks), kAppendWarps * 32, 0,
                       static_cast<cudaStream_t>(p.exec.stream)>>>(a);
    MLA_CUDA_LAUNCHED("kv_append_kernel launch");
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
