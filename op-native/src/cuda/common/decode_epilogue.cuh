// The epilogue pieces every decode-shaped kernel with an m16n8-style accumulator fragment
// shares (sm80 mma.sync, sm90 wgmma): a row's lse / normaliser / largest logit from its
// running maximum and sum, and the fragment written as float rows (the staging area of
// write_row, or a split unit's partial).
#pragma once
#include <cmath>

namespace mla {
namespace cuda {

// A row's results from its running maximum m (log2 units) and total normaliser lt: lse
// (natural log; +inf for a finished row without keys, -inf for a piece without keys, NaN
// when the row saw a NaN key), 1 / lt, and its largest logit (natural units).
struct RowResult {
    float lse, inv, max_logit;
};

__device__ __forceinline__ RowResult row_result(float m, float lt, bool complete) {
    constexpr float kLn2 = 0.69314718055994531f;
    RowResult r;
    const bool seen = !(lt <= 0.f);  // NaN lt counts as seen
    r.lse = seen ? m * kLn2 + logf(lt) : (complete ? INFINITY : -INFINITY);
    r.inv = seen ? 1.f / lt : 0.f;
    r.max_logit = lt != lt ? NAN : (seen ? m * kLn2 : -INFINITY);
    return r;
}

// A thread's O fragment of N n8 groups (o(nt, e): the accumulator layout of mma.sync m16n8 /
// wgmma m64nN, rows row0 / row1, columns col0 + 8 nt + 2 q4 + {0, 1}), times inv per row,
// into rows of floats at dst (row stride ld); columns at or past `cols` and rows at or past
// `rows` are skipped.
template <int N, typename O>
__device__ __forceinline__ void store_o_rows(const O &o, const float (&inv)[2], float *dst, int ld,
                                             int row0, int row1, int q4, int col0, int cols, int rows) {
#pragma unroll
    for (int nt = 0; nt < N; ++nt) {
        const int col = col0 + nt * 8 + q4 * 2;
        if (col < cols) {
            if (row0 < rows)
                *reinterpret_cast<float2 *>(dst + row0 * ld + col) =
                    make_float2(o(nt, 0) * inv[0], o(nt, 1) * inv[0]);
            if (row1 < rows)
                *reinterpret_cast<float2 *>(dst + row1 * ld + col) =
                    make_float2(o(nt, 2) * inv[1], o(nt, 3) * inv[1]);
        }
    }
}

// The same for the flat fragment of wgmma m64n256 (o[nt * 4 + e]).
__device__ __forceinline__ void store_o_rows(const float (&o)[128], const float (&inv)[2], float *dst,
                                             int ld, int row0, int row1, int q4, int col0, int cols,
                                             int rows) {
    store_o_rows<32>([&](int nt, int e) { return o[nt * 4 + e]; }, inv, dst, ld, row0, row1, q4, col0,
                     cols, rows);
}

}  // namespace cuda
}  // namespace mla
