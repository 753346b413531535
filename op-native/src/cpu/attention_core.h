// The arithmetic shared by the CPU attention kernels: dot-product and P.V blocks on explicit
// vectors, and the online-softmax accumulator that folds tiles of keys into the running
// (max, sum, weighted value sum) of a set of query rows.
//
// A unit of work holds `rows` query rows (e.g. every query head of one KV-head group, or a few
// queries times those heads) that attend the same key sequence, each row within its own
// contiguous range of it. Keys arrive in tiles of at most kKeyTile rows given by pointers, so
// a tile can point straight into the caller's buffers (when their type is the accumulator type)
// or into a scratch buffer that holds converted / dequantised rows: each key row is converted
// once and reused by every query row of the unit.
//
// Accumulator types: float for float32 / bfloat16 / float16 inputs, double for float64.
// The micro kernels take the vector width VB in bytes: 16 for the x86-64-v2 baseline (SSE),
// 32 inside functions compiled for AVX2 (add_tile picks one at run time). They are forced
// inline so that they always take the instruction set of the function that uses them.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>
#include "common/dtype.h"
#include "common/rope.h"

#if defined(__GNUC__) || defined(__clang__)
#define MLA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define MLA_ALWAYS_INLINE inline
#endif

namespace mla {
namespace cpu {

// Keys folded into the softmax state at a time.
constexpr int64_t kKeyTile = 64;

// The mla_dtype whose elements are the accumulator type itself (rows of it need no copy).
template <typename A>
constexpr int32_t native_dtype() {
    return sizeof(A) == 8 ? MLA_FLOAT64 : MLA_FLOAT32;
}

// ---- vectors (GCC / Clang vector extensions) ---------------------------------------------------

template <typename A, int VB>
struct Simd {
    typedef A V __attribute__((vector_size(VB)));
    // The same vector at element alignment, allowed to alias A: unaligned loads and stores.
    typedef A U __attribute__((vector_size(VB), aligned(alignof(A)), may_alias));
    static constexpr int N = VB / int(sizeof(A));
};

// Vectors pass by reference only: a by-value vector wider than the baseline registers would
// have a different calling convention in the two instruction sets.
template <typename A, int VB>
MLA_ALWAYS_INLINE void vload(typename Simd<A, VB>::V &v, const A *p) {
    v = *reinterpret_cast<const typename Simd<A, VB>::U *>(p);
}

template <typename A, int VB>
MLA_ALWAYS_INLINE void vstore(A *p, const typename Simd<A, VB>::V &v) {
    *reinterpret_cast<typename Simd<A, VB>::U *>(p) = v;
}

// All lanes = x. (Written as 0 + x: the forms GCC folds to a bare broadcast in the baseline
// compile into lane-by-lane inserts in the AVX2 build.)
template <typename A, int VB>
MLA_ALWAYS_INLINE void vsplat(typename Simd<A, VB>::V &v, A x) {
    v = typename Simd<A, VB>::V{} + x;
}

template <typename A, int VB>
MLA_ALWAYS_INLINE A vsum(const typename Simd<A, VB>::V &v) {
    A s = A(0);
    for (int l = 0; l < Simd<A, VB>::N; ++l) s += v[l];
    return s;
}

// ---- micro kernels -------------------------------------------------------------------------

// out[r * C + c] = q[r] . k[c] over n dims, R query rows times C key rows per call, so each
// loaded vector feeds several products; the R * C accumulators stay in registers.
template <typename A, int VB, int R, int C>
MLA_ALWAYS_INLINE void dot_block(const A *const *q, const A *const *k, int64_t n, A *out) {
    typedef typename Simd<A, VB>::V V;
    constexpr int N = Simd<A, VB>::N;
    V acc[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = V{};
    int64_t i = 0;
    for (; i + N <= n; i += N) {
        V kv[C];
        for (int c = 0; c < C; ++c) vload<A, VB>(kv[c], k[c] + i);
        for (int r = 0; r < R; ++r) {
            V qv;
            vload<A, VB>(qv, q[r] + i);
            for (int c = 0; c < C; ++c) acc[r][c] += qv * kv[c];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
            A s = vsum<A, VB>(acc[r][c]);
            for (int64_t j = i; j < n; ++j) s += q[r][j] * k[c][j];
            out[r * C + c] = s;
        }
}

// acc[r][0..d) += sum_j p[r][j] * v[j][0..d) for R rows and the keys j in [j0, j1). A slice of
// W vectors per row stays in registers while the keys stream past.
template <typename A, int VB, int R>
MLA_ALWAYS_INLINE void pv_block(A *acc, int64_t acc_stride, const A *p, int64_t p_stride,
                                const A *const *v, int64_t j0, int64_t j1, int64_t d) {
    typedef typename Simd<A, VB>::V V;
    constexpr int N = Simd<A, VB>::N;
    constexpr int W = R >= 4 ? 2 : 4;
    int64_t c = 0;
    for (; c + W * N <= d; c += W * N) {
        V a[R][W];
        for (int r = 0; r < R; ++r)
            for (int w = 0; w < W; ++w) vload<A, VB>(a[r][w], acc + r * acc_stride + c + w * N);
        for (int64_t j = j0; j < j1; ++j) {
            V x[W];
            for (int w = 0; w < W; ++w) vload<A, VB>(x[w], v[j] + c + w * N);
            for (int r = 0; r < R; ++r) {
                A pr = p[r * p_stride + j];
                for (int w = 0; w < W; ++w) a[r][w] += pr * x[w];
            }
        }
        for (int r = 0; r < R; ++r)
            for (int w = 0; w < W; ++w) vstore<A, VB>(acc + r * acc_stride + c + w * N, a[r][w]);
    }
    for (; c < d; ++c)
        for (int r = 0; r < R; ++r) {
            A s = acc[r * acc_stride + c];
            for (int64_t j = j0; j < j1; ++j) s += p[r * p_stride + j] * v[j][c];
            acc[r * acc_stride + c] = s;
        }
}

// s[r * kKeyTile + jb + x] = scale * q[r] . key (jb + x) for R query rows (row r at
// q + r * q_stride) and the C * N keys from jb, with the tile's keys transposed: kt [d][kKeyTile].
// Outer products (a broadcast query element times a vector of keys) leave R * C vector
// accumulators that need no horizontal sum.
template <typename A, int VB, int R, int C>
MLA_ALWAYS_INLINE void score_block(const A *q, int64_t q_stride, const A *kt, int64_t d,
                                   int64_t jb, A scale, A *s) {
    typedef typename Simd<A, VB>::V V;
    constexpr int N = Simd<A, VB>::N;
    V acc[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = V{};
    for (int64_t i = 0; i < d; ++i) {
        V kv[C];
        for (int c = 0; c < C; ++c) vload<A, VB>(kv[c], kt + i * kKeyTile + jb + c * N);
        for (int r = 0; r < R; ++r) {
            V b;
            vsplat<A, VB>(b, q[r * q_stride + i]);
            for (int c = 0; c < C; ++c) acc[r][c] += b * kv[c];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
            V out = acc[r][c] * scale;
            vstore<A, VB>(s + r * kKeyTile + jb + c * N, out);
        }
}

// exp(x) for x <= 0 on a float vector, in place: 2^n times a polynomial on [-ln2/2, ln2/2]
// (relative error about 1e-7); x below -87.3 (-inf included) gives 0, NaN stays NaN.
template <int VB>
MLA_ALWAYS_INLINE void vexp_nonpositive(typename Simd<float, VB>::V &x) {
    typedef typename Simd<float, VB>::V V;
    typedef int32_t I __attribute__((vector_size(VB)));
    const V lo = V{} - 87.33654f;
    const I underflow = x < lo;  // lanes whose result is 0
    const I nan = x != x;        // lanes passed through unchanged
    I xb, lb;
    std::memcpy(&xb, &x, sizeof xb);
    std::memcpy(&lb, &lo, sizeof lb);
    const I x_bits = xb;
    // Clamp (and zero the NaN lanes), so that the conversion to int below stays in range.
    xb = ((lb & underflow) | (xb & ~underflow)) & ~nan;
    V xc;
    std::memcpy(&xc, &xb, sizeof xc);
    // n = round(x / ln2): for x <= 0, truncating x / ln2 - 0.5 rounds to nearest.
    const I n = __builtin_convertvector(xc * 1.44269504088896341f - 0.5f, I);
    const V nf = __builtin_convertvector(n, V);
    const V r = xc - nf * 0.693359375f + nf * 2.12194440e-4f;  // x - n ln2 in two parts
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const I two_n_bits = (n + 127) << 23;
    V two_n;
    std::memcpy(&two_n, &two_n_bits, sizeof two_n);
    const V y = p * two_n;
    I yb;
    std::memcpy(&yb, &y, sizeof yb);
    yb = (yb & ~underflow & ~nan) | (x_bits & nan);
    std::memcpy(&x, &yb, sizeof x);
}

// s[j] = exp(s[j] - m) for j in [j0, j1); returns their sum. Vectorised for float; double keeps
// the library exp (float64 is the precision path used for gradient checks).
template <typename A, int VB>
MLA_ALWAYS_INLINE A exp_shifted(A *s, int64_t j0, int64_t j1, A m) {
    A sum = A(0);
    int64_t j = j0;
    if constexpr (sizeof(A) == 4) {
        typedef typename Simd<float, VB>::V V;
        constexpr int N = Simd<float, VB>::N;
        V vs = V{};
        for (; j + N <= j1; j += N) {
            V x;
            vload<float, VB>(x, s + j);
            x -= m;
            vexp_nonpositive<VB>(x);
            vstore<float, VB>(s + j, x);
            vs += x;
        }
        sum = vsum<float, VB>(vs);
    }
    for (; j < j1; ++j) {
        s[j] = std::exp(s[j] - m);
        sum += s[j];
    }
    return sum;
}

// ---- online softmax --------------------------------------------------------------------------

// Running state of `rows` query rows: max score m, sum of exp(P - m) l, and the value sum
// acc [rows, d_v] weighted by exp(P - m), meaningful once l > 0. Memory is owned by the
// caller (rows * (d_v + 2)).
template <typename A>
struct SoftmaxState {
    int64_t rows = 0, d_v = 0;
    A *m = nullptr, *l = nullptr, *acc = nullptr;

    static int64_t size(int64_t rows, int64_t d_v) { return rows * (d_v + 2); }

    void bind(A *mem, int64_t n_rows, int64_t dv) {
        rows = n_rows;
        d_v = dv;
        m = mem;
        l = mem + n_rows;
        acc = mem + 2 * n_rows;
    }

    // acc is not cleared: a row's acc is written when the row gets its first key, and a row
    // without keys (l = 0) is never read.
    void reset() {
        std::fill(m, m + rows, -std::numeric_limits<A>::infinity());
        std::fill(l, l + rows, A(0));
    }
};

// A tile of keys: n <= kKeyTile rows; k[j] has d_qk values, v[j] at least d_v (v[j] may be
// k[j] when the value is the first d_v dims of the key).
template <typename A>
struct KeyTile {
    const A *k[kKeyTile];
    const A *v[kKeyTile];
    int64_t n = 0;
};

// Softmax update of one row whose scores s[j0..j1) are set; turns them into exp(s - m_new)
// in place and rescales the row's state. Returns false when the row gains nothing (no key, or
// every score is -inf), in which case the P.V step must be skipped for it. A NaN score (a key
// holding NaN) makes the maximum NaN, so the row ends NaN even when no other key is finite.
template <typename A, int VB>
MLA_ALWAYS_INLINE bool softmax_update(SoftmaxState<A> &st, int64_t r, A *s, int64_t j0,
                                      int64_t j1) {
    if (j0 >= j1) return false;
    A tmax = -std::numeric_limits<A>::infinity();
    for (int64_t j = j0; j < j1; ++j) tmax = s[j] > tmax || s[j] != s[j] ? s[j] : tmax;
    const A m_old = st.m[r];
    const A m_new = tmax > m_old || tmax != tmax ? tmax : m_old;
    if (m_new == -std::numeric_limits<A>::infinity()) return false;
    const A sum = exp_shifted<A, VB>(s, j0, j1, m_new);
    A *acc = st.acc + r * st.d_v;
    if (st.l[r] == A(0)) {
        std::fill(acc, acc + st.d_v, A(0));  // first keys of the row
    } else if (m_new != m_old) {
        const A alpha = std::exp(m_old - m_new);
        for (int64_t c = 0; c < st.d_v; ++c) acc[c] *= alpha;
        st.l[r] *= alpha;
    }
    st.m[r] = m_new;
    st.l[r] += sum;
    return true;
}

// One row over the tile keys [j0, j1) with the keys as row pointers: dot products four keys at
// a time. Used when a unit has fewer than four rows (transposing the tile would not pay).
template <typename A, int VB>
MLA_ALWAYS_INLINE void add_tile_row(SoftmaxState<A> &st, int64_t r, const A *q, int64_t d_qk,
                                    A scale, const KeyTile<A> &t, int64_t j0, int64_t j1,
                                    A *scores) {
    if (j0 >= j1) return;
    A *s = scores + r * kKeyTile;
    const A *qr = q + r * d_qk;
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) {
        A out[4];
        dot_block<A, VB, 1, 4>(&qr, &t.k[j], d_qk, out);
        for (int i = 0; i < 4; ++i) s[j + i] = out[i] * scale;
    }
    for (; j < j1; ++j) {
        A out;
        dot_block<A, VB, 1, 1>(&qr, &t.k[j], d_qk, &out);
        s[j] = out * scale;
    }
    if (softmax_update<A, VB>(st, r, s, j0, j1))
        pv_block<A, VB, 1>(st.acc + r * st.d_v, st.d_v, s, kKeyTile, t.v, j0, j1, st.d_v);
}

// Scratch of add_tile: scores [rows][kKeyTile]; the tile's keys transposed, kt
// [d_qk][kKeyTile], and its values packed, vt [kKeyTile][d_v] (both used from four rows on).
template <typename A>
struct TileBuffers {
    A *scores, *kt, *vt;
};

// One row over the tile keys [j0, j1) with the keys transposed in kt. Scores are computed for
// whole vector chunks around the range; the extra ones are never read.
template <typename A, int VB>
MLA_ALWAYS_INLINE void add_tile_row_t(SoftmaxState<A> &st, int64_t r, const A *q, int64_t d_qk,
                                      A scale, const A *kt, const A *const *v, int64_t j0,
                                      int64_t j1, A *scores) {
    constexpr int64_t chunk = 2 * Simd<A, VB>::N;
    if (j0 >= j1) return;
    A *s = scores + r * kKeyTile;
    for (int64_t jb = j0 / chunk * chunk; jb < j1; jb += chunk)
        score_block<A, VB, 1, 2>(q + r * d_qk, d_qk, kt, d_qk, jb, scale, s);
    if (softmax_update<A, VB>(st, r, s, j0, j1))
        pv_block<A, VB, 1>(st.acc + r * st.d_v, st.d_v, s, kKeyTile, v, j0, j1, st.d_v);
}

// Four rows r..r+3, row i over the tile keys [j0[i], j1[i]). Scores for the union of the
// ranges (each row reads only its own); P.V four rows at a time over the common part of the
// ranges and row by row over the rest, so no row ever touches a key outside its range.
template <typename A, int VB>
MLA_ALWAYS_INLINE void add_tile_rows4(SoftmaxState<A> &st, int64_t r, const A *q, int64_t d_qk,
                                      A scale, const A *kt, const A *const *v,
                                      const int64_t *j0, const int64_t *j1, A *scores) {
    constexpr int64_t chunk = 2 * Simd<A, VB>::N;
    const int64_t d_v = st.d_v;
    int64_t lo = kKeyTile, hi = 0, common_lo = 0, common_hi = kKeyTile;
    for (int i = 0; i < 4; ++i) {
        if (j0[i] < j1[i]) {
            lo = std::min(lo, j0[i]);
            hi = std::max(hi, j1[i]);
        }
        common_lo = std::max(common_lo, j0[i]);
        common_hi = std::min(common_hi, j1[i]);
    }
    if (lo >= hi) return;
    A *s = scores + r * kKeyTile;
    for (int64_t jb = lo / chunk * chunk; jb < hi; jb += chunk)
        score_block<A, VB, 4, 2>(q + r * d_qk, d_qk, kt, d_qk, jb, scale, s);
    bool live[4];
    for (int i = 0; i < 4; ++i)
        live[i] = softmax_update<A, VB>(st, r + i, s + i * kKeyTile, j0[i], j1[i]);
    const bool together = live[0] && live[1] && live[2] && live[3] && common_lo < common_hi;
    if (together)
        pv_block<A, VB, 4>(st.acc + r * d_v, d_v, s, kKeyTile, v, common_lo, common_hi, d_v);
    for (int i = 0; i < 4; ++i) {
        if (!live[i]) continue;
        A *acc = st.acc + (r + i) * d_v;
        const A *p = s + i * kKeyTile;
        if (together) {
            pv_block<A, VB, 1>(acc, d_v, p, kKeyTile, v, j0[i], common_lo, d_v);
            pv_block<A, VB, 1>(acc, d_v, p, kKeyTile, v, common_hi, j1[i], d_v);
        } else {
            pv_block<A, VB, 1>(acc, d_v, p, kKeyTile, v, j0[i], j1[i], d_v);
        }
    }
}

// add_tile for one vector width; see add_tile.
template <typename A, int VB>
MLA_ALWAYS_INLINE void add_tile_impl(SoftmaxState<A> &st, const A *q, int64_t d_qk, A scale,
                                     const KeyTile<A> &t, const int32_t *lo, const int32_t *hi,
                                     const TileBuffers<A> &buf) {
    static_assert(kKeyTile % (2 * Simd<A, VB>::N) == 0, "tile must hold whole key chunks");
    const int64_t n = t.n, d_v = st.d_v;
    if (n == 0) return;
    if (st.rows < 4) {
        for (int64_t r = 0; r < st.rows; ++r)
            add_tile_row<A, VB>(st, r, q, d_qk, scale, t, lo ? lo[r] : 0, lo ? hi[r] : n,
                                buf.scores);
        return;
    }
    // Keys transposed and values packed once per tile: every row reads them from a small
    // contiguous block (rows of the caller's tensors can be far apart and alias in the cache).
    const A *v[kKeyTile];
    for (int64_t j = 0; j < n; ++j) {
        const A *k = t.k[j];
        for (int64_t i = 0; i < d_qk; ++i) buf.kt[i * kKeyTile + j] = k[i];
        A *vj = buf.vt + j * d_v;
        std::copy(t.v[j], t.v[j] + d_v, vj);
        v[j] = vj;
    }
    int64_t r = 0;
    for (; r + 4 <= st.rows; r += 4) {
        int64_t j0[4], j1[4];
        for (int i = 0; i < 4; ++i) {
            j0[i] = lo ? lo[r + i] : 0;
            j1[i] = lo ? hi[r + i] : n;
        }
        add_tile_rows4<A, VB>(st, r, q, d_qk, scale, buf.kt, v, j0, j1, buf.scores);
    }
    for (; r < st.rows; ++r)
        add_tile_row_t<A, VB>(st, r, q, d_qk, scale, buf.kt, v, lo ? lo[r] : 0, lo ? hi[r] : n,
                              buf.scores);
}

// Folds a tile of keys into the state. q: [rows, d_qk] contiguous. Row r attends the tile keys
// [lo[r], hi[r]) (all n when lo is null). Keys outside a row's range never enter its sums
// (they may hold NaN). Runs the AVX2 + FMA build of add_tile_impl where the processor has it
// (attention_core.cpp).
void add_tile(SoftmaxState<float> &st, const float *q, int64_t d_qk, float scale,
              const KeyTile<float> &t, const int32_t *lo, const int32_t *hi,
              const TileBuffers<float> &buf);
void add_tile(SoftmaxState<double> &st, const double *q, int64_t d_qk, double scale,
              const KeyTile<double> &t, const int32_t *lo, const int32_t *hi,
              const TileBuffers<double> &buf);

// Merges the state of one row of another key split (m2, l2, acc2) into (m, l, acc). A state
// with l = 0 has no keys and its acc is not meaningful.
template <typename A>
inline void merge_row(A &m, A &l, A *acc, A m2, A l2, const A *acc2, int64_t d_v) {
    if (l2 == A(0)) return;
    if (l == A(0)) {
        std::copy(acc2, acc2 + d_v, acc);
        m = m2;
        l = l2;
        return;
    }
    A m_new = m2 > m ? m2 : m;
    A a1 = std::exp(m - m_new), a2 = std::exp(m2 - m_new);
    for (int64_t c = 0; c < d_v; ++c) acc[c] = acc[c] * a1 + acc2[c] * a2;
    l = l * a1 + l2 * a2;
    m = m_new;
}

// Turns a row's state into the attention output in place and returns its lse (natural log,
// sink excluded). A row that attended no key becomes 0 with lse = +inf. With a sink s the
// output is scaled by 1 / (1 + exp(s - lse)): +inf zeroes it, -inf leaves it.
template <typename A>
inline A finish_row(A m, A l, A *acc, int64_t d_v, const float *sink) {
    if (l == A(0)) {
        std::fill(acc, acc + d_v, A(0));
        return std::numeric_limits<A>::infinity();
    }
    A lse = m + std::log(l);
    A factor = A(1) / l;
    if (sink) {
        A s = A(*sink);
        if (s == std::numeric_limits<A>::infinity())
            factor = A(0);
        else if (s != -std::numeric_limits<A>::infinity())
            factor /= A(1) + std::exp(s - lse);
    }
    for (int64_t c = 0; c < d_v; ++c) acc[c] *= factor;
    return lse;
}

// Epilogue of one query row: finish_row, then the VVPA rotation of the last rope dims by
// R(-position) when `rotation` is set, then the store at element `offset` of `out` in its type.
// Returns the lse.
template <typename A>
inline A write_output_row(A m, A l, A *acc, int64_t d_v, const float *sink,
                          const RopeAngles *rotation, int64_t position, void *out, int32_t dtype,
                          int64_t offset) {
    A lse = finish_row(m, l, acc, d_v, sink);
    if (rotation) rotate_row(*rotation, d_v, position, -1, acc);
    store_row<A>(out, dtype, offset, d_v, acc);
    return lse;
}

// ---- per-worker scratch ------------------------------------------------------------------------

// Buffers one worker needs for a unit of `rows` query rows: the queries converted to A, key and
// value tiles for rows that need conversion, add_tile's buffers, the softmax state and per-row
// key ranges. Allocated before a parallel region, never inside it.
template <typename A>
struct Scratch {
    std::vector<A> q, keys, values, scores, kt, vt, state;
    std::vector<int32_t> lo, hi;
    KeyTile<A> tile;

    void init(int64_t rows, int64_t d_qk, int64_t d_v, bool separate_values, bool own_state) {
        q.resize(size_t(rows * d_qk));
        keys.resize(size_t(kKeyTile * d_qk));
        if (separate_values) values.resize(size_t(kKeyTile * d_v));
        scores.resize(size_t(rows * kKeyTile));
        kt.resize(size_t(rows >= 4 ? d_qk * kKeyTile : 0));
        vt.resize(size_t(rows >= 4 ? kKeyTile * d_v : 0));
        if (own_state) state.resize(size_t(SoftmaxState<A>::size(rows, d_v)));
        lo.resize(size_t(rows));
        hi.resize(size_t(rows));
    }

    TileBuffers<A> buffers() { return TileBuffers<A>{scores.data(), kt.data(), vt.data()}; }
};

}  // namespace cpu
}  // namespace mla
