// The arithmetic shared by the CPU attention kernels: small dot-product and P.V blocks written
// so that -O3 vectorises them, and the online-softmax accumulator that folds tiles of keys into
// the running (max, sum, weighted value sum) of a set of query rows.
//
// A unit of work holds `rows` query rows (e.g. every query head of one KV-head group, or a few
// queries times those heads) that attend the same key sequence, each row within its own
// contiguous range of it. Keys arrive in tiles of at most kKeyTile rows given by pointers, so
// a tile can point straight into the caller's buffers (when their type is the accumulator type)
// or into a scratch buffer that holds converted / dequantised rows: each key row is converted
// once and reused by every query row of the unit.
//
// Accumulator types: float for float32 / bfloat16 / float16 inputs, double for float64.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>
#include "common/dtype.h"
#include "common/rope.h"

namespace mla {
namespace cpu {

// Keys folded into the softmax state at a time.
constexpr int64_t kKeyTile = 64;

// Independent partial sums per dot product: enough lanes for two SSE registers of floats.
template <typename A>
struct Lanes {
    static constexpr int value = 16 / sizeof(A) * 2;
};

// The mla_dtype whose elements are the accumulator type itself (rows of it need no copy).
template <typename A>
constexpr int32_t native_dtype() {
    return sizeof(A) == 8 ? MLA_FLOAT64 : MLA_FLOAT32;
}

// ---- micro kernels -------------------------------------------------------------------------

// out[r * C + c] = q[r] . k[c] over n dims, R query rows times C key rows per call, so each
// loaded element feeds several products.
template <typename A, int R, int C>
inline void dot_block(const A *const *q, const A *const *k, int64_t n, A *out) {
    constexpr int L = Lanes<A>::value;
    A acc[R][C][L];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c)
            for (int l = 0; l < L; ++l) acc[r][c][l] = A(0);
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int r = 0; r < R; ++r)
            for (int c = 0; c < C; ++c)
                for (int l = 0; l < L; ++l) acc[r][c][l] += q[r][i + l] * k[c][i + l];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
            A s = A(0);
            for (int l = 0; l < L; ++l) s += acc[r][c][l];
            for (int64_t j = i; j < n; ++j) s += q[r][j] * k[c][j];
            out[r * C + c] = s;
        }
}

// acc[r][0..d) += sum_j p[r][j] * v[j][0..d) for R rows and the keys j in [j0, j1); the
// accumulator slice stays in registers while the keys stream past.
template <typename A, int R>
inline void pv_block(A *acc, int64_t acc_stride, const A *p, int64_t p_stride,
                     const A *const *v, int64_t j0, int64_t j1, int64_t d) {
    constexpr int W = Lanes<A>::value;
    int64_t c = 0;
    for (; c + W <= d; c += W) {
        A a[R][W];
        for (int r = 0; r < R; ++r)
            for (int l = 0; l < W; ++l) a[r][l] = acc[r * acc_stride + c + l];
        for (int64_t j = j0; j < j1; ++j) {
            const A *vj = v[j] + c;
            for (int r = 0; r < R; ++r) {
                A pr = p[r * p_stride + j];
                for (int l = 0; l < W; ++l) a[r][l] += pr * vj[l];
            }
        }
        for (int r = 0; r < R; ++r)
            for (int l = 0; l < W; ++l) acc[r * acc_stride + c + l] = a[r][l];
    }
    for (; c < d; ++c)
        for (int r = 0; r < R; ++r) {
            A s = acc[r * acc_stride + c];
            for (int64_t j = j0; j < j1; ++j) s += p[r * p_stride + j] * v[j][c];
            acc[r * acc_stride + c] = s;
        }
}

// ---- online softmax --------------------------------------------------------------------------

// Running state of `rows` query rows: max score m, sum of exp(P - m) l, and the value sum
// acc [rows, d_v] weighted by exp(P - m). Memory is owned by the caller (rows * (d_v + 2)).
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

    void reset() {
        std::fill(m, m + rows, -std::numeric_limits<A>::infinity());
        std::fill(l, l + rows, A(0));
        std::fill(acc, acc + rows * d_v, A(0));
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
// every score is -inf), in which case the P.V step must be skipped for it.
template <typename A>
inline bool softmax_update(SoftmaxState<A> &st, int64_t r, A *s, int64_t j0, int64_t j1) {
    if (j0 >= j1) return false;
    A tmax = -std::numeric_limits<A>::infinity();
    for (int64_t j = j0; j < j1; ++j) tmax = s[j] > tmax ? s[j] : tmax;
    A m_old = st.m[r];
    A m_new = tmax > m_old ? tmax : m_old;
    if (m_new == -std::numeric_limits<A>::infinity()) return false;
    A sum = A(0);
    for (int64_t j = j0; j < j1; ++j) {
        s[j] = std::exp(s[j] - m_new);
        sum += s[j];
    }
    if (m_new != m_old) {
        A alpha = std::exp(m_old - m_new);  // 0 while the row was empty
        A *acc = st.acc + r * st.d_v;
        for (int64_t c = 0; c < st.d_v; ++c) acc[c] *= alpha;
        st.l[r] *= alpha;
        st.m[r] = m_new;
    }
    st.l[r] += sum;
    return true;
}

// Scores, softmax update and P.V of one row over the tile keys [j0, j1), four keys per
// dot-product block.
template <typename A>
inline void add_tile_row(SoftmaxState<A> &st, int64_t r, const A *q, int64_t d_qk, A scale,
                         const KeyTile<A> &t, int64_t j0, int64_t j1, A *scores) {
    if (j0 >= j1) return;
    A *s = scores + r * kKeyTile;
    const A *qr = q + r * d_qk;
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) {
        A out[4];
        dot_block<A, 1, 4>(&qr, &t.k[j], d_qk, out);
        for (int i = 0; i < 4; ++i) s[j + i] = out[i] * scale;
    }
    for (; j < j1; ++j) {
        A out;
        dot_block<A, 1, 1>(&qr, &t.k[j], d_qk, &out);
        s[j] = out * scale;
    }
    if (softmax_update(st, r, s, j0, j1))
        pv_block<A, 1>(st.acc + r * st.d_v, st.d_v, s, kKeyTile, t.v, j0, j1, st.d_v);
}

// Folds a tile of keys into the state. q: [rows, d_qk] contiguous. Row r attends the tile keys
// [lo[r], hi[r]) (all n when lo is null). scores: scratch of rows * kKeyTile.
// Keys outside a row's range are never part of its sums (they may hold NaN).
template <typename A>
void add_tile(SoftmaxState<A> &st, const A *q, int64_t d_qk, A scale, const KeyTile<A> &t,
              const int32_t *lo, const int32_t *hi, A *scores) {
    const int64_t n = t.n, d_v = st.d_v;
    if (n == 0) return;
    int64_t r = 0;
    // Blocks of four rows with one key range (all heads of a query, or the whole unit when the
    // ranges are shared): each key row feeds four dot products and four P.V rows.
    for (; r + 4 <= st.rows; r += 4) {
        int64_t j0 = lo ? lo[r] : 0, j1 = lo ? hi[r] : n;
        bool uniform = !lo || (lo[r + 1] == j0 && lo[r + 2] == j0 && lo[r + 3] == j0 &&
                               hi[r + 1] == j1 && hi[r + 2] == j1 && hi[r + 3] == j1);
        if (!uniform) {
            for (int i = 0; i < 4; ++i)
                add_tile_row(st, r + i, q, d_qk, scale, t, lo[r + i], hi[r + i], scores);
            continue;
        }
        if (j0 >= j1) continue;
        A *s = scores + r * kKeyTile;
        const A *qr[4] = {q + r * d_qk, q + (r + 1) * d_qk, q + (r + 2) * d_qk, q + (r + 3) * d_qk};
        for (int64_t j = j0; j < j1; ++j) {
            A out[4];
            dot_block<A, 4, 1>(qr, &t.k[j], d_qk, out);
            for (int i = 0; i < 4; ++i) s[i * kKeyTile + j] = out[i] * scale;
        }
        bool live[4];
        for (int i = 0; i < 4; ++i) live[i] = softmax_update(st, r + i, s + i * kKeyTile, j0, j1);
        if (live[0] && live[1] && live[2] && live[3]) {
            pv_block<A, 4>(st.acc + r * d_v, d_v, s, kKeyTile, t.v, j0, j1, d_v);
        } else {
            for (int i = 0; i < 4; ++i)
                if (live[i])
                    pv_block<A, 1>(st.acc + (r + i) * d_v, d_v, s + i * kKeyTile, kKeyTile, t.v,
                                   j0, j1, d_v);
        }
    }
    for (; r < st.rows; ++r)
        add_tile_row(st, r, q, d_qk, scale, t, lo ? lo[r] : 0, lo ? hi[r] : n, scores);
}

// Merges the state of one row of another key split (m2, l2, acc2) into (m, l, acc).
template <typename A>
inline void merge_row(A &m, A &l, A *acc, A m2, A l2, const A *acc2, int64_t d_v) {
    if (l2 == A(0) && m2 == -std::numeric_limits<A>::infinity()) return;
    A m_new = m2 > m ? m2 : m;
    A a1 = m == -std::numeric_limits<A>::infinity() ? A(0) : std::exp(m - m_new);
    A a2 = std::exp(m2 - m_new);
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
// value tiles for rows that need conversion, the tile's scores, the softmax state and per-row
// key ranges. Allocated before a parallel region, never inside it.
template <typename A>
struct Scratch {
    std::vector<A> q, keys, values, scores, state;
    std::vector<int32_t> lo, hi;
    KeyTile<A> tile;

    void init(int64_t rows, int64_t d_qk, int64_t d_v, bool separate_values, bool own_state) {
        q.resize(size_t(rows * d_qk));
        keys.resize(size_t(kKeyTile * d_qk));
        if (separate_values) values.resize(size_t(kKeyTile * d_v));
        scores.resize(size_t(rows * kKeyTile));
        if (own_state) state.resize(size_t(SoftmaxState<A>::size(rows, d_v)));
        lo.resize(size_t(rows));
        hi.resize(size_t(rows));
    }
};

}  // namespace cpu
}  // namespace mla
