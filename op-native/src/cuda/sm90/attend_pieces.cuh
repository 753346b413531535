// Pieces of the sm_90a attention kernels with two consumer warpgroups over 64 query rows
// (sparse/attend_kernel.cuh; the layout and fragment conventions of decode_wgmma.cuh):
// S = Q K^T for a 64-key tile, O += P V for a warpgroup's 256 value columns, the online
// softmax on a thread's S fragment, and the epilogue from the accumulators.
//
// Fragments (wgmma m64nNk16, float accumulators): a thread of warp wq of its warpgroup holds
// rows row0 = 16 wq + g and row1 = row0 + 8 (g = lane / 4), columns 8 nt + 2 q4 + {0, 1}
// (q4 = lane % 4) for each n8 group nt: S as s[nt * 4 + e] (e: bit 1 the row, bit 0 the
// column), O likewise over the warpgroup's 32 n8 groups.
// Shared-memory regions use the 128-byte-swizzle atom wgmma reads: column block cb (64
// elements) of row r at cb * 8192 + r * 128, 16-byte chunk c at c ^ (r % 8).
#pragma once
#include <cstdint>
#include "cuda/common/decode_args.cuh"
#include "cuda/common/decode_epilogue.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/sm90/wgmma.cuh"

namespace mla {
namespace cuda {
namespace sm90 {

// Bytes of one column block (64 elements of 2 bytes) of a 64-row region.
constexpr uint32_t kColBlock = 64 * 128;

// Swizzled byte offset of 16-byte chunk c (elements 8 c .. 8 c + 7) of row r of a 64-row
// region.
__device__ __forceinline__ uint32_t swz(int r, int c) {
    return uint32_t((c >> 3) * kColBlock + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

#ifdef MLA_SM90_WGMMA

// S = Q K^T over DQK for the 64 keys of the K tile at descriptor dk (64 rows x 64 keys, one
// commit group). Descriptors advance by compile-time constants (16-byte units): k-step ks is
// 32 bytes into column block ks / 4.
template <typename T, int DQK>
__device__ __forceinline__ void issue_s(float (&s)[32], uint32_t desc_q, uint32_t desc_k) {
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < DQK / 16; ++ks) {
        const uint32_t o = uint32_t(((ks >> 2) * kColBlock + (ks & 3) * 32) >> 4);
        wgmma_m64n64k16<T, 0>(s, desc(desc_q + o), desc(desc_k + o), ks > 0);
    }
    wgmma_commit();
}

// O += P V over 64 keys: P (64 x 64, shared memory, descriptor desc_p), V = 256 value columns
// of the K tile read MN-major (descriptor desc_v, LBO one column block).
template <typename T>
__device__ __forceinline__ void issue_pv(float (&o)[128], uint32_t desc_p, uint32_t desc_v) {
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)  // 16 keys: 32 bytes of P, 2 KB of V
        wgmma_m64n256k16<T, 1>(o, desc(desc_p + ks * 2), desc(desc_v + ks * 128), 1);
    wgmma_commit();
}

// The same with P from registers (pr: exp_store's packed pairs).
template <typename T>
__device__ __forceinline__ void issue_pv_regs(float (&o)[128], const uint32_t (&pr)[16],
                                              uint32_t desc_v) {
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
        const uint32_t ak[4] = {pr[ks * 4], pr[ks * 4 + 1], pr[ks * 4 + 2], pr[ks * 4 + 3]};
        wgmma_m64n256k16_rs<T>(o, ak, desc(desc_v + ks * 128), 1);
    }
    wgmma_commit();
}

// Scales S to log2 units, masks the keys whose bit in `valid` is clear (-inf), and returns
// the row maxima of the thread's two rows (quad-reduced). NaN scores stay NaN (and do not
// count in the maximum: the row ends NaN through its normaliser).
__device__ __forceinline__ void scale_mask_valid(float (&s)[32], float scale_log2, uint64_t valid,
                                                 int q4, float (&mx)[2]) {
    mx[0] = mx[1] = -INFINITY;
    const uint64_t v = valid >> (2 * q4);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float x = s[nt * 4 + e] * scale_log2;
            if (!((v >> (nt * 8 + (e & 1))) & 1)) x = -INFINITY;
            s[nt * 4 + e] = x;
            mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    }
}

// The new running maximum mn: mu (the exponent's offset, 0 while no key is visible) and the
// factor al of what was summed so far; m becomes mn.
__device__ __forceinline__ void advance_max(float (&m)[2], const float (&mn)[2], float (&mu)[2],
                                            float (&al)[2]) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        mu[i] = mn[i] == -INFINITY ? 0.f : mn[i];
        al[i] = ex2_ftz(m[i] - mu[i]);
        m[i] = mn[i];
    }
}

// P = 2^(s - mu) as T into the 64 x 64 tile at p_addr (shared memory); rs = this thread's
// row sums; pr = the same pairs as the register A operand of P V (k-step ks: n8 groups 2 ks
// and 2 ks + 1, rows row0 / row1).
template <typename T>
__device__ __forceinline__ void exp_store(const float (&s)[32], uint32_t p_addr, int row0,
                                          int row1, int q4, const float (&mu)[2], float (&rs)[2],
                                          uint32_t (&pr)[16]) {
    rs[0] = rs[1] = 0.f;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
        const float p0 = ex2_ftz(s[nt * 4 + 0] - mu[0]);
        const float p1 = ex2_ftz(s[nt * 4 + 1] - mu[0]);
        const float p2 = ex2_ftz(s[nt * 4 + 2] - mu[1]);
        const float p3 = ex2_ftz(s[nt * 4 + 3] - mu[1]);
        rs[0] += p0 + p1;
        rs[1] += p2 + p3;
        const int k = (nt >> 1) * 4 + (nt & 1) * 2;
        pr[k] = ptx::pack2<T>(p0, p1);
        pr[k + 1] = ptx::pack2<T>(p2, p3);
        const uint32_t a0 = p_addr + swz(row0, nt) + q4 * 4;
        const uint32_t a1 = p_addr + swz(row1, nt) + q4 * 4;
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a0), "r"(pr[k]));
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a1), "r"(pr[k + 1]));
    }
}

// O *= al per row, skipped when no row of the warp moved its maximum.
__device__ __forceinline__ void rescale_o(float (&o)[128], const float (&al)[2]) {
    if (__any_sync(0xffffffffu, al[0] != 1.f || al[1] != 1.f)) {
#pragma unroll
        for (int nt = 0; nt < 32; ++nt) {
            o[nt * 4 + 0] *= al[0];
            o[nt * 4 + 1] *= al[0];
            o[nt * 4 + 2] *= al[1];
            o[nt * 4 + 3] *= al[1];
        }
    }
}

#endif  // MLA_SM90_WGMMA

}  // namespace sm90
}  // namespace cuda
}  // namespace mla
