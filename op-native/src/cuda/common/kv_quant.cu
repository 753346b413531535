// KV cache quantise / dequantise on a CUDA device (ops.md section 5), byte for byte what the
// CPU writes (cpu/kv_cache.cpp, common/cache.h write_token / read_token), through the device
// copies of the CPU's conversions (common/convert.cuh). One warp per token row.
//  - quantise: the row read as float (load_row<float>), per tile the largest magnitude (NaN
//    never counts), the power-of-two scale, value / scale to float8_e4m3, the scale bytes
//    (V32: the float; MODEL1: the UE8M0 exponent, the scale row's padding zero), the rope part
//    to bf16; the padding at the end of a MODEL1 block zero.
//  - dequantise: fp8 value times the tile's scale in float, bf16 rope values exact, stored as
//    the CPU stores them. A NaN product takes the bits SSE gives it (the NaN operand quieted,
//    the fp8 NaN being the CPU's table value, or the default NaN 0xffc00000 for inf * 0), so
//    NaN payloads match too.
#include <cuda_runtime.h>
#include "cuda/common/check.cuh"
#include "cuda/common/convert.cuh"
#include "cuda/common/device_scope.cuh"
#include "cuda/common/kv_quant.h"
#include "cuda/runtime.h"

namespace mla {
namespace cuda {
namespace {

constexpr int kQuantWarps = 4;  // tokens per CTA

struct QuantArgs {
    int32_t dtype;               // of kv
    int32_t kind;                // V32 or MODEL1
    int32_t d_nope, d_rope, tile, n_scales;
    int64_t num_blocks, block_size, d_qk;
    int64_t data_row_bytes, scale_row_bytes, block_bytes;
    void *kv;
    uint8_t *cache;
};

// Where token (blk, off) lives: its fp8 row, its scale bytes and its bf16 part.
struct TokenBytes {
    uint8_t *row, *scales, *rope;
};

__device__ __forceinline__ TokenBytes token_bytes(const QuantArgs &a, int64_t blk, int64_t off) {
    TokenBytes t;
    if (a.kind == MLA_CACHE_V32) {
        t.row = a.cache + (blk * a.block_size + off) * a.data_row_bytes;
        t.scales = t.row + a.d_nope;
        t.rope = t.row + a.d_nope + 4 * a.n_scales;
    } else {
        uint8_t *base = a.cache + blk * a.block_bytes;
        t.row = base + off * a.data_row_bytes;
        t.scales = base + a.block_size * a.data_row_bytes + off * a.scale_row_bytes;
        t.rope = t.row + a.d_nope;
    }
    return t;
}

__global__ void kv_quantize_kernel(const __grid_constant__ QuantArgs a) {
    const int lane = threadIdx.x & 31;
    const int64_t tok = int64_t(blockIdx.x) * kQuantWarps + (threadIdx.x >> 5);
    if (tok >= a.num_blocks * a.block_size) return;
    const int64_t blk = tok / a.block_size, off = tok % a.block_size;
    const int64_t src0 = tok * a.d_qk;
    const TokenBytes t = token_bytes(a, blk, off);
    if (a.kind == MLA_CACHE_MODEL1) {
        for (int64_t e = a.n_scales + lane; e < a.scale_row_bytes; e += 32) t.scales[e] = 0;
        if (off == 0) {  // the block's padding after its data and scale rows
            uint8_t *base = a.cache + blk * a.block_bytes;
            for (int64_t e = a.block_size * (a.data_row_bytes + a.scale_row_bytes) + lane;
                 e < a.block_bytes; e += 32)
                base[e] = 0;
        }
    }
    for (int s = 0; s < a.n_scales; ++s) {
        const int64_t e0 = int64_t(s) * a.tile, e1 = e0 + a.tile;
        float amax = 0.0f;
        for (int64_t e = e0 + lane; e < e1; e += 32) {
            const float v = fabsf(conv::load_float(a.kv, a.dtype, src0 + e));
            amax = v > amax ? v : amax;
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float u = __shfl_xor_sync(0xffffffffu, amax, o);
            amax = u > amax ? u : amax;
        }
        const float scale = conv::fp8_tile_scale(amax);
        for (int64_t e = e0 + lane; e < e1; e += 32)
            t.row[e] = conv::float_to_fp8_e4m3(conv::load_float(a.kv, a.dtype, src0 + e) / scale);
        if (lane == 0) {
            if (a.kind == MLA_CACHE_V32) {
                const uint32_t u = conv::float_bits(scale);
                for (int k = 0; k < 4; ++k) t.scales[4 * s + k] = uint8_t(u >> (8 * k));
            } else {
                // UE8M0: the biased exponent of the power-of-two scale (a normal float:
                // 2^-14 <= scale <= 2^127), what the CPU's frexp gives.
                t.scales[s] = uint8_t((conv::float_bits(scale) >> 23) & 0xffu);
            }
        }
    }
    for (int64_t e = lane; e < a.d_rope; e += 32) {
        const uint16_t v = conv::float_to_bf16(conv::load_float(a.kv, a.dtype, src0 + a.d_nope + e));
        t.rope[2 * e] = uint8_t(v & 0xff);
        t.rope[2 * e + 1] = uint8_t(v >> 8);
    }
}

// The CPU's float of an fp8 byte (its table): NaN codes are the quiet NaN of their sign.
__device__ __forceinline__ float cpu_fp8_value(uint8_t v) {
    if ((v & 0x7fu) == 0x7fu) return conv::bits_float((v & 0x80u) ? 0xffc00000u : 0x7fc00000u);
    return conv::fp8_e4m3_to_float(v);
}

// a * b with SSE's NaN result: the first NaN operand quieted, else the default NaN.
__device__ __forceinline__ float mul_like_sse(float a, float b) {
    const float r = __fmul_rn(a, b);
    if (!isnan(r)) return r;
    if (isnan(a)) return conv::bits_float(conv::float_bits(a) | 0x00400000u);
    if (isnan(b)) return conv::bits_float(conv::float_bits(b) | 0x00400000u);
    return conv::bits_float(0xffc00000u);
}

// Stores a float as the CPU's store_row<float> (store_row<double> for a float64 kv, of the
// float widened exactly) does.
__device__ __forceinline__ void store_value(void *p, int32_t dtype, int64_t i, float v) {
    switch (dtype) {
        case MLA_FLOAT64: static_cast<double *>(p)[i] = conv::float_to_double(v); break;
        case MLA_FLOAT32: static_cast<float *>(p)[i] = v; break;
        case MLA_FLOAT16: static_cast<uint16_t *>(p)[i] = conv::float_to_f16(v); break;
        default: static_cast<uint16_t *>(p)[i] = conv::float_to_bf16(v); break;
    }
}

__global__ void kv_dequantize_kernel(const __grid_constant__ QuantArgs a) {
    const int lane = threadIdx.x & 31;
    const int64_t tok = int64_t(blockIdx.x) * kQuantWarps + (threadIdx.x >> 5);
    if (tok >= a.num_blocks * a.block_size) return;
    const int64_t blk = tok / a.block_size, off = tok % a.block_size;
    const int64_t dst0 = tok * a.d_qk;
    const TokenBytes t = token_bytes(a, blk, off);
    for (int64_t e = lane; e < a.d_nope; e += 32) {
        const int64_t s = e / a.tile;
        float scale;
        if (a.kind == MLA_CACHE_V32) {
            const uint8_t *sb = t.scales + 4 * s;
            scale = conv::bits_float(uint32_t(sb[0]) | (uint32_t(sb[1]) << 8) | (uint32_t(sb[2]) << 16) |
                                     (uint32_t(sb[3]) << 24));
        } else {
            scale = ldexpf(1.0f, int(t.scales[s]) - 127);
        }
        store_value(a.kv, a.dtype, dst0 + e, mul_like_sse(cpu_fp8_value(t.row[e]), scale));
    }
    for (int64_t e = lane; e < a.d_rope; e += 32) {
        const uint16_t v = uint16_t(t.rope[2 * e]) | uint16_t(uint16_t(t.rope[2 * e + 1]) << 8);
        store_value(a.kv, a.dtype, dst0 + a.d_nope + e, conv::bf16_to_float(v));
    }
}

QuantArgs quant_args(const mla_quant_params &p, const mla_cache &c, const CacheLayout &l) {
    QuantArgs a{};
    a.dtype = p.dtype;
    a.kind = l.kind;
    a.d_nope = l.d_nope;
    a.d_rope = l.d_rope;
    a.tile = l.tile;
    a.n_scales = l.n_scales;
    a.num_blocks = c.num_blocks;
    a.block_size = c.block_size;
    a.d_qk = l.d_qk;
    a.data_row_bytes = l.data_row_bytes;
    a.scale_row_bytes = l.scale_row_bytes;
    a.block_bytes = l.block_bytes;
    a.kv = p.kv;
    a.cache = static_cast<uint8_t *>(const_cast<void *>(c.data));
    return a;
}

mla_status prepare(const mla_quant_params &p, const mla_cache &c, const char *op,
                   const char *cache_name, DeviceScope *scope, int64_t *blocks) {
    const int n = device_count();
    MLA_REQUIRE(p.exec.device >= 0 && p.exec.device < n,
                "%s: exec.device must be in [0, %d), got %d", op, n, p.exec.device);
    const int64_t tokens = c.num_blocks * c.block_size;
    *blocks = (tokens + kQuantWarps - 1) / kQuantWarps;
    if (tokens == 0) return MLA_OK;
    MLA_REQUIRE(*blocks <= 0x7fffffff, "%s: num_blocks * block_size must be < 2^33 on a GPU, "
                "got %lld", op, (long long)tokens);
    MLA_TRY(scope->enter(p.exec.device, op));
    MLA_TRY(device_pointer(p.kv, op, "kv"));
    MLA_TRY(device_pointer(c.data, op, cache_name));
    return MLA_OK;
}

}  // namespace

mla_status kv_quantize(const mla_quant_params &p, const mla_cache &out, const CacheLayout &l) {
    const char *op = "mla_kv_quantize";
    DeviceScope scope;
    int64_t blocks = 0;
    MLA_TRY(prepare(p, out, op, p.cache_out ? "cache_out" : "cache.data", &scope, &blocks));
    if (blocks == 0) return MLA_OK;
    kv_quantize_kernel<<<unsigned(blocks), kQuantWarps * 32, 0,
                         static_cast<cudaStream_t>(p.exec.stream)>>>(quant_args(p, out, l));
    MLA_CUDA_LAUNCHED("kv_quantize_kernel launch");
    return MLA_OK;
}

mla_status kv_dequantize(const mla_quant_params &p, const CacheLayout &l) {
    const char *op = "mla_kv_dequantize";
    DeviceScope scope;
    int64_t blocks = 0;
    MLA_TRY(prepare(p, p.cache, op, "cache.data", &scope, &blocks));
    if (blocks == 0) return MLA_OK;
    kv_dequantize_kernel<<<unsigned(blocks), kQuantWarps * 32, 0,
                           static_cast<cudaStream_t>(p.exec.stream)>>>(quant_args(p, p.cache, l));
    MLA_CUDA_LAUNCHED("kv_dequantize_kernel launch");
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
