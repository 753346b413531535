// FP8 key rows (V32, MODEL1) for the sm_80+ tensor-core dense decode kernel: a key tile is
// staged raw and dequantised to the kernel's 16-bit type T inside shared memory, so the main
// loop reads the same swizzled K tile as for a plain cache.
//   raw copy   each warp cp.async-copies the bytes of its key rows (the data row: fp8 part, V32
//              scales, bf16 part; MODEL1 also its scale row) into the tail of the row's own
//              slot of a K stage (row_alloc * sizeof(T) bytes, at a.kv.fp8.raw_at), a tile ahead;
//   dequant    after the tile before it is consumed, the same warp turns each staged row into
//              T in place: lane l reads fp8 chunk l (16 values) with its tile's scale and bf16
//              chunk l, the warp syncs, then writes them to the row's swizzled chunks.
// Only the warp that owns a row touches its slot, so a warp barrier orders the reads before the
// writes that overlap them. Layouts taken here (checked by the host): d_nope <= 512 and
// d_rope <= 256 with d_nope, tile multiples of 16 and d_rope of 8; 16-byte aligned data rows.
#pragma once
#include <cuda_fp8.h>
#include <type_traits>
#include "cuda/common/decode_args.cuh"
#include "cuda/common/ptx.cuh"

namespace mla {
namespace cuda {
namespace sm80 {

// Byte offset of 16-byte chunk c of row r in a Q / K region of rows of `ra` elements of
// `elem` bytes: chunks XOR-swizzled by (r & 7) so ldmatrix is free of bank conflicts.
__device__ __forceinline__ uint32_t swizzled(int r, int c, int ra, int elem) {
    return uint32_t((r * ra + ((c ^ (r & 7)) << 3)) * elem);
}

// Starts the raw copy of key row `slot` (key_slot packing; < 0: no key, nothing copied) into
// the row slot at shared address `row_s`.
__device__ __forceinline__ void fp8_copy_row(const DecodeArgs &a, uint32_t row_s, int64_t slot,
                                             int lane) {
    if (slot < 0) return;
    const uint8_t *kv = static_cast<const uint8_t *>(a.kv.data);
    const uint32_t raw = row_s + uint32_t(a.kv.fp8.raw_at);
    const uint8_t *src = kv + fp8_row_offset(a.kv, slot);
    const int chunks = int(a.kv.fp8.data_row_bytes >> 4);
    for (int c = lane; c < chunks; c += 32) ptx::cp_async_16(raw + 16 * c, src + 16 * c, 16);
    if (a.kv.kind == MLA_CACHE_MODEL1) {
        const uint8_t *sc = kv + fp8_scale_offset(a.kv, slot);
        const uint32_t dst = raw + uint32_t(a.kv.fp8.data_row_bytes);
        const int pieces = int(a.kv.fp8.scale_row_bytes >> 3);
        for (int c = lane; c < pieces; c += 32) ptx::cp_async_8(dst + 8 * c, sc + 8 * c);
    }
}

// Two float8_e4m3 values (low byte first) times `scale`, packed as two T.
template <typename T>
__device__ __forceinline__ uint32_t fp8x2_scaled(uint32_t two, float scale) {
    const __half2_raw h =
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3);
    const float2 f = __half22float2(__half2(h));
    return ptx::pack2<T>(f.x * scale, f.y * scale);
}

// Two bf16 values as two T.
template <typename T>
__device__ __forceinline__ uint32_t bf16x2_as(uint32_t two) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        return two;
    } else {
        return ptx::pack2<T>(__uint_as_float(two << 16), __uint_as_float(two & 0xffff0000u));
    }
}

// Dequantises the staged row r (slot < 0: writes zeros) of the K stage at `kb` in place. All
// lanes of the owning warp call it.
template <typename T>
__device__ __forceinline__ void fp8_dequant_row(const DecodeArgs &a, uint32_t kb, int r, int ra,
                                                int64_t slot, int lane) {
    constexpr int kElem = int(sizeof(T));
    const int n8 = a.kv.fp8.d_nope >> 4, nr = a.kv.fp8.d_rope >> 3;
    const uint32_t raw = kb + uint32_t(r * ra * kElem + a.kv.fp8.raw_at);
    uint4 v8 = make_uint4(0, 0, 0, 0), vr = make_uint4(0, 0, 0, 0);
    float sc = 0.f;
    if (slot >= 0) {
        if (lane < n8) {
            v8 = ptx::ld_shared_v4(raw + 16 * lane);
            const int t = (16 * lane) / a.kv.fp8.tile;
            if (a.kv.kind == MLA_CACHE_V32) {
                sc = ptx::ld_shared_f32(raw + uint32_t(a.kv.fp8.d_nope + 4 * t));
            } else {  // UE8M0: 2^(byte - 127) is the float with that exponent field (0: 2^-127)
                const uint32_t e =
                    ptx::ld_shared_u8(raw + uint32_t(a.kv.fp8.data_row_bytes) + uint32_t(t));
                sc = __uint_as_float(e ? e << 23 : 0x00400000u);
            }
        }
        if (lane < nr) vr = ptx::ld_shared_v4(raw + uint32_t(a.kv.fp8.rope_at) + 16 * lane);
    }
    __syncwarp();
    if (lane < n8) {
        const uint4 lo = make_uint4(fp8x2_scaled<T>(v8.x, sc), fp8x2_scaled<T>(v8.x >> 16, sc),
                                    fp8x2_scaled<T>(v8.y, sc), fp8x2_scaled<T>(v8.y >> 16, sc));
        const uint4 hi = make_uint4(fp8x2_scaled<T>(v8.z, sc), fp8x2_scaled<T>(v8.z >> 16, sc),
                                    fp8x2_scaled<T>(v8.w, sc), fp8x2_scaled<T>(v8.w >> 16, sc));
        ptx::st_shared_v4(kb + swizzled(r, 2 * lane, ra, kElem), lo);
        ptx::st_shared_v4(kb + swizzled(r, 2 * lane + 1, ra, kElem), hi);
    }
    if (lane < nr) {
        const uint4 v = make_uint4(bf16x2_as<T>(vr.x), bf16x2_as<T>(vr.y), bf16x2_as<T>(vr.z),
                                   bf16x2_as<T>(vr.w));
        ptx::st_shared_v4(kb + swizzled(r, 2 * n8 + lane, ra, kElem), v);
    }
    __syncwarp();
}

}  // namespace sm80
}  // namespace cuda
}  // namespace mla
