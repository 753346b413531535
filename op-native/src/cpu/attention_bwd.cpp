// Dense attention backward on the CPU (ops.md section 4), FlashAttention-2 style: no score
// matrix is kept. Rows are (query, query head) pairs; a tile holds consecutive queries of one
// sequence times the query heads of one kv head (row = query * G + head in group).
//  Pass A, per query tile: D_i, the sink-aware lse of every row, then dq over tiles of keys.
//  Pass B, per key tile of one kv head: dk and dv summed over the query rows that see the
//  keys, streamed in chunks of rows.
// Each output row is owned by one work item, so no locks and a fixed summation order. A row
// only ever touches the keys of its causal / window range (hidden keys may hold anything).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/dtype.h"
#include "common/parallel.h"
#include "cpu/backward_kernels.h"

namespace mla {
namespace cpu {
namespace {

using bwd::row_accumulate;
using bwd::row_dots;
using bwd::row_ptr;

constexpr int64_t kKeyTile = 64;      // keys converted together and reused by every row
constexpr int64_t kRowsPerTile = 64;  // (query, head) rows per query tile / row chunk

struct Seq {
    int64_t q0, sq;  // first global query row, query rows
    int64_t k0, sk;  // first global key row, key rows
};

// Rows [start, start + len) of sequence `seq` (queries for pass A, keys for pass B).
struct Tile {
    int64_t seq, start, len;
};

// Whether four consecutive ranges [lo[x], hi[x]) are one and the same.
inline bool same_range4(const int64_t *lo, const int64_t *hi) {
    for (int x = 1; x < 4; ++x)
        if (lo[x] != lo[0] || hi[x] != hi[0]) return false;
    return true;
}

template <typename Acc>
class DenseBackward {
public:
    explicit DenseBackward(const mla_attention_params &p)
        : p_(p),
          varlen_(p.cu_seqlens_q != nullptr),
          alias_(p.v == p.k),
          G_(p.h_q / p.h_kv),
          Q_(std::max<int64_t>(1, kRowsPerTile / (p.h_q / p.h_kv))),
          threads_(p.exec.num_threads),
          scale_(Acc(p.softmax_scale)),
          refine_(p.dtype == MLA_FLOAT64),
          rows_q_(varlen_ ? p.total_q : p.b * p.s_q),
          rot_(p.out_rotation, rows_q_, p.d_v, p.exec.num_threads) {
        for (int64_t b = 0; b < p.b; ++b) {
            Seq s;
            if (varlen_) {
                s.q0 = p.cu_seqlens_q[b];
                s.sq = p.cu_seqlens_q[b + 1] - s.q0;
                s.k0 = p.cu_seqlens_k[b];
                s.sk = p.cu_seqlens_k[b + 1] - s.k0;
            } else {
                s = Seq{b * p.s_q, p.s_q, b * p.s_k, p.s_k};
            }
            seqs_.push_back(s);
            for (int64_t i = 0; i < s.sq; i += Q_) q_tiles_.push_back({b, i, std::min(Q_, s.sq - i)});
            for (int64_t j = 0; j < s.sk; j += kKeyTile)
                k_tiles_.push_back({b, j, std::min(kKeyTile, s.sk - j)});
        }
        D_.assign(size_t(rows_q_ * p.h_q), Acc(0));
        L_.assign(size_t(rows_q_ * p.h_q), Acc(0));
        scratch_a_.resize(size_t(plan_workers(items_a(), 1, threads_)));
        for (auto &s : scratch_a_) s.init(Q_ * G_, p.d_qk, p.d_v);
        scratch_b_.resize(size_t(plan_workers(items_b(), 1, threads_)));
        for (auto &s : scratch_b_) s.init(Q_ * G_, p.d_qk, p.d_v);
    }

    void run() {
        parallel_for(items_a(), 1, threads_, [&](int64_t begin, int64_t end, int worker) {
            for (int64_t it = begin; it < end; ++it)
                query_tile(q_tiles_[size_t(it / p_.h_kv)], it % p_.h_kv, scratch_a_[size_t(worker)]);
        });
        parallel_for(items_b(), 1, threads_, [&](int64_t begin, int64_t end, int worker) {
            for (int64_t it = begin; it < end; ++it)
                key_tile(k_tiles_[size_t(it / p_.h_kv)], it % p_.h_kv, scratch_b_[size_t(worker)]);
        });
        bwd::sink_gradient(p_.sink, p_.dsink, rows_q_, p_.h_q, D_, L_);
    }

private:
    // A converted key tile: row pointers for the keys and for the values (which point into
    // the key rows when v aliases k).
    struct KeyTileBuf {
        std::vector<Acc> k, v;
        std::vector<const Acc *> kp, vp;
        void init(int64_t dqk, int64_t dv) {
            k.resize(size_t(kKeyTile * dqk));
            v.resize(size_t(kKeyTile * dv));
            kp.resize(size_t(kKeyTile));
            vp.resize(size_t(kKeyTile));
        }
    };
    struct ScratchA {
        KeyTileBuf tile;
        std::vector<Acc> q, dout, out, dq, s, dp, D, L;
        std::vector<int64_t> lo, hi;
        std::vector<bwd::OnlineLse> lse;
        void init(int64_t rows, int64_t dqk, int64_t dv) {
            tile.init(dqk, dv);
            q.resize(size_t(rows * dqk));
            dq.resize(size_t(rows * dqk));
            dout.resize(size_t(rows * dv));
            out.resize(size_t(dv));
            s.resize(size_t(4 * kKeyTile));
            dp.resize(size_t(4 * kKeyTile));
            D.resize(size_t(rows));
            L.resize(size_t(rows));
            lo.resize(size_t(rows));
            hi.resize(size_t(rows));
            lse.resize(size_t(rows));
        }
    };
    struct ScratchB {
        KeyTileBuf tile;
        std::vector<Acc> dk, dv;       // [kKeyTile, d] accumulators
        std::vector<Acc> q, dout;      // converted rows of a chunk
        std::vector<const Acc *> qp, dp_rows;
        std::vector<Acc> wk, wv;       // [kKeyTile, rows]: scale * dS and P, transposed
        std::vector<Acc> s, dp;        // [4, kKeyTile]: scores and dout.v of up to four rows
        std::vector<Acc> L, D;         // per live row of the chunk
        std::vector<int64_t> query, a, e;  // per live row: its query, its keys [a, e) in the tile
        std::vector<int64_t> r0, r1;   // per key of the tile: the rows [r0, r1) that see it
        void init(int64_t rows, int64_t dqk, int64_t dv_) {
            tile.init(dqk, dv_);
            dk.resize(size_t(kKeyTile * dqk));
            dv.resize(size_t(kKeyTile * dv_));
            q.resize(size_t(rows * dqk));
            dout.resize(size_t(rows * dv_));
            qp.resize(size_t(rows));
            dp_rows.resize(size_t(rows));
            wk.resize(size_t(kKeyTile * rows));
            wv.resize(size_t(kKeyTile * rows));
            s.resize(size_t(4 * kKeyTile));
            dp.resize(size_t(4 * kKeyTile));
            L.resize(size_t(rows));
            D.resize(size_t(rows));
            query.resize(size_t(rows));
            a.resize(size_t(rows));
            e.resize(size_t(rows));
            r0.resize(size_t(kKeyTile));
            r1.resize(size_t(kKeyTile));
        }
    };

    int64_t items_a() const { return int64_t(q_tiles_.size()) * p_.h_kv; }
    int64_t items_b() const { return int64_t(k_tiles_.size()) * p_.h_kv; }

    // Element offset of row i of sequence b, head h, in a tensor with strides st.
    int64_t offset(const int64_t *st, int64_t b, int64_t row0, int64_t i, int64_t h) const {
        return varlen_ ? (row0 + i) * st[1] + h * st[2] : b * st[0] + i * st[1] + h * st[2];
    }

    // Keys [lo, hi) that query i of a sequence may attend (bottom-right aligned).
    void key_range(const Seq &s, int64_t i, int64_t *lo, int64_t *hi) const {
        int64_t diag = i + s.sk - s.sq;
        int64_t h = p_.causal ? std::min(s.sk, diag + 1) : s.sk;
        int64_t l = p_.window > 0 ? std::max<int64_t>(0, diag - p_.window + 1) : 0;
        *lo = l;
        *hi = std::max(l, h);
    }

    // Queries [lo, hi) that may attend some key of [j0, j1).
    void query_range(const Seq &s, int64_t j0, int64_t j1, int64_t *lo, int64_t *hi) const {
        int64_t shift = s.sk - s.sq;
        int64_t l = p_.causal ? std::max<int64_t>(0, j0 - shift) : 0;
        int64_t h = p_.window > 0 ? std::min(s.sq, j1 - 1 - shift + p_.window) : s.sq;
        *lo = std::min(l, s.sq);
        *hi = std::max(*lo, h);
    }

    // Converts keys [j0, j0 + n) of kv head hk; kp[j] / vp[j] index the tile from 0.
    void load_keys(const Seq &s, int64_t b, int64_t hk, int64_t j0, int64_t n, KeyTileBuf &t,
                   bool values) const {
        for (int64_t j = 0; j < n; ++j) {
            t.kp[size_t(j)] = row_ptr<Acc>(p_.k, p_.dtype, offset(p_.k_stride, b, s.k0, j0 + j, hk),
                                           p_.d_qk, &t.k[size_t(j * p_.d_qk)]);
            if (!values) continue;
            t.vp[size_t(j)] = alias_ ? t.kp[size_t(j)]
                                     : row_ptr<Acc>(p_.v, p_.dtype,
                                                    offset(p_.v_stride, b, s.k0, j0 + j, hk),
                                                    p_.d_v, &t.v[size_t(j * p_.d_v)]);
        }
    }

    int64_t lse_index(int64_t b, int64_t h, int64_t i, int64_t global_row) const {
        return varlen_ ? h * p_.total_q + global_row : (b * p_.h_q + h) * p_.s_q + i;
    }

    // Pass A: the rows of one query tile for the G query heads of kv head hk.
    void query_tile(const Tile &t, int64_t hk, ScratchA &w) {
        const Seq &s = seqs_[size_t(t.seq)];
        const int64_t dqk = p_.d_qk, dv = p_.d_v, R = t.len * G_;
        int64_t klo = s.sk, khi = 0;  // keys that some row of the tile attends
        for (int64_t r = 0; r < R; ++r) {
            int64_t i = t.start + r / G_, h = hk * G_ + r % G_, gi = s.q0 + i;
            Acc *q = &w.q[size_t(r * dqk)], *dout = &w.dout[size_t(r * dv)];
            load_row<Acc>(p_.q, p_.dtype, offset(p_.q_stride, t.seq, s.q0, i, h), dqk, q);
            load_row<Acc>(p_.dout, p_.dtype, offset(p_.dout_stride, t.seq, s.q0, i, h), dv, dout);
            load_row<Acc>(p_.out, p_.dtype, offset(p_.out_stride, t.seq, s.q0, i, h), dv,
                          w.out.data());
            w.D[size_t(r)] = Acc(bwd::dot_wide(dout, w.out.data(), dv));
            if (rot_.active()) rot_.apply(gi, dout);
            std::fill_n(&w.dq[size_t(r * dqk)], dqk, Acc(0));
            key_range(s, i, &w.lo[size_t(r)], &w.hi[size_t(r)]);
            if (!refine_) w.L[size_t(r)] = Acc(p_.lse[lse_index(t.seq, h, i, gi)]);
            if (w.lo[size_t(r)] < w.hi[size_t(r)]) {
                klo = std::min(klo, w.lo[size_t(r)]);
                khi = std::max(khi, w.hi[size_t(r)]);
            }
        }
        if (refine_) recompute_lse(s, t, hk, klo, khi, w);
        for (int64_t r = 0; r < R; ++r) {
            int64_t h = hk * G_ + r % G_, gi = s.q0 + t.start + r / G_;
            double l = w.L[size_t(r)];
            if (p_.sink) l = bwd::add_sink(l, p_.sink[h]);
            w.L[size_t(r)] = Acc(l);
            D_[size_t(gi * p_.h_q + h)] = w.D[size_t(r)];
            L_[size_t(gi * p_.h_q + h)] = w.L[size_t(r)];
        }
        for (int64_t j0 = klo; j0 < khi; j0 += kKeyTile) {
            int64_t n = std::min(kKeyTile, khi - j0);
            load_keys(s, t.seq, hk, j0, n, w.tile, true);
            for (int64_t r = 0; r < R;) {
                int64_t a = std::max(w.lo[size_t(r)], j0) - j0, e = std::min(w.hi[size_t(r)], j0 + n) - j0;
                if (bwd::dead_row(w.L[size_t(r)]) || a >= e) {
                    ++r;
                    continue;
                }
                // Four live rows with one key range go together (the heads of a query, or any
                // rows off the diagonal).
                int64_t m = 1;
                if (r + 4 <= R) {
                    m = 4;
                    for (int64_t x = r + 1; x < r + 4; ++x)
                        if (bwd::dead_row(w.L[size_t(x)]) ||
                            std::max(w.lo[size_t(x)], j0) - j0 != a ||
                            std::min(w.hi[size_t(x)], j0 + n) - j0 != e)
                            m = 1;
                }
                dq_rows(w, r, m, a, e);
                r += m;
            }
        }
        for (int64_t r = 0; r < R; ++r) {
            int64_t h = hk * G_ + r % G_, gi = s.q0 + t.start + r / G_;
            Acc *dq = &w.dq[size_t(r * dqk)];
            for (int64_t c = 0; c < dqk; ++c) dq[c] *= scale_;
            store_row<Acc>(p_.dq, p_.dtype, (gi * p_.h_q + h) * dqk, dqk, dq);
        }
    }

    // dq of rows [r, r + m) (m = 1 or 4, one key range [a, e) of the loaded tile).
    void dq_rows(ScratchA &w, int64_t r, int64_t m, int64_t a, int64_t e) {
        const int64_t dqk = p_.d_qk, dv = p_.d_v;
        const Acc *q[4], *dout[4];
        Acc *sc[4], *dp[4], *dq[4];
        for (int64_t x = 0; x < m; ++x) {
            q[x] = &w.q[size_t((r + x) * dqk)];
            dout[x] = &w.dout[size_t((r + x) * dv)];
            dq[x] = &w.dq[size_t((r + x) * dqk)];
            sc[x] = &w.s[size_t(x * kKeyTile)];
            dp[x] = &w.dp[size_t(x * kKeyTile)];
        }
        if (m == 4) {
            bwd::rows4_dots(q, w.tile.kp.data(), a, e, dqk, sc);
            bwd::rows4_dots(dout, w.tile.vp.data(), a, e, dv, dp);
        } else {
            row_dots(q[0], w.tile.kp.data(), a, e, dqk, sc[0]);
            row_dots(dout[0], w.tile.vp.data(), a, e, dv, dp[0]);
        }
        for (int64_t x = 0; x < m; ++x) {
            const Acc L = w.L[size_t(r + x)], D = w.D[size_t(r + x)];
            for (int64_t j = a; j < e; ++j) sc[x][j] = std::exp(scale_ * sc[x][j] - L) * (dp[x][j] - D);
        }
        if (m == 4)
            bwd::rows4_accumulate(dq, sc, w.tile.kp.data(), a, e, dqk);
        else
            row_accumulate(dq[0], sc[0], w.tile.kp.data(), a, e, dqk);
    }

    // float64: lse from the scores in double rather than the forward's float32 lse, so that
    // gradient checks are not limited by its rounding.
    void recompute_lse(const Seq &s, const Tile &t, int64_t hk, int64_t klo, int64_t khi,
                       ScratchA &w) {
        const int64_t dqk = p_.d_qk, R = t.len * G_;
        std::fill_n(w.lse.begin(), R, bwd::OnlineLse());
        for (int64_t j0 = klo; j0 < khi; j0 += kKeyTile) {
            int64_t n = std::min(kKeyTile, khi - j0);
            load_keys(s, t.seq, hk, j0, n, w.tile, false);
            for (int64_t r = 0; r < R; ++r) {
                int64_t a = std::max(w.lo[size_t(r)], j0) - j0, e = std::min(w.hi[size_t(r)], j0 + n) - j0;
                if (a >= e) continue;
                row_dots(&w.q[size_t(r * dqk)], w.tile.kp.data(), a, e, dqk, w.s.data());
                for (int64_t j = a; j < e; ++j) w.lse[size_t(r)].add(double(scale_ * w.s[size_t(j)]));
            }
        }
        for (int64_t r = 0; r < R; ++r) w.L[size_t(r)] = Acc(w.lse[size_t(r)].value());
    }

    // Pass B: P and scale * dS of chunk rows [r, r + m) (m = 1 or 4, one key range) for the
    // keys of the tile, stored key-major (row stride `rows`) for the accumulation over rows.
    void weights(ScratchB &w, int64_t r, int64_t m, int64_t rows) {
        const int64_t a = w.a[size_t(r)], e = w.e[size_t(r)];
        Acc *sc[4], *dp[4];
        for (int64_t x = 0; x < m; ++x) {
            sc[x] = &w.s[size_t(x * kKeyTile)];
            dp[x] = &w.dp[size_t(x * kKeyTile)];
        }
        if (m == 4) {
            bwd::rows4_dots(&w.qp[size_t(r)], w.tile.kp.data(), a, e, p_.d_qk, sc);
            bwd::rows4_dots(&w.dp_rows[size_t(r)], w.tile.vp.data(), a, e, p_.d_v, dp);
        } else {
            row_dots(w.qp[size_t(r)], w.tile.kp.data(), a, e, p_.d_qk, sc[0]);
            row_dots(w.dp_rows[size_t(r)], w.tile.vp.data(), a, e, p_.d_v, dp[0]);
        }
        for (int64_t x = 0; x < m; ++x) {
            const Acc L = w.L[size_t(r + x)], D = w.D[size_t(r + x)];
            for (int64_t j = a; j < e; ++j) {
                Acc prob = std::exp(scale_ * sc[x][j] - L);
                w.wv[size_t(j * rows + r + x)] = prob;
                w.wk[size_t(j * rows + r + x)] = scale_ * prob * (dp[x][j] - D);
            }
        }
    }

    // Pass B: dk and dv of one key tile [j0, j0 + n) of kv head hk.
    void key_tile(const Tile &t, int64_t hk, ScratchB &w) {
        const Seq &s = seqs_[size_t(t.seq)];
        const int64_t dqk = p_.d_qk, dv = p_.d_v, j0 = t.start, n = t.len, shift = s.sk - s.sq;
        const int64_t rows = Q_ * G_;  // row stride of wk / wv
        std::fill_n(w.dk.data(), n * dqk, Acc(0));
        std::fill_n(w.dv.data(), n * dv, Acc(0));
        int64_t ilo, ihi;
        query_range(s, j0, j0 + n, &ilo, &ihi);
        if (ilo < ihi) load_keys(s, t.seq, hk, j0, n, w.tile, true);
        for (int64_t i0 = ilo; i0 < ihi; i0 += Q_) {
            const int64_t i1 = std::min(ihi, i0 + Q_);
            // Live rows of the chunk, in (query, head) order, with their key range in the tile.
            int64_t R = 0;
            for (int64_t i = i0; i < i1; ++i) {
                int64_t lo, hi;
                key_range(s, i, &lo, &hi);
                int64_t a = std::max(lo, j0) - j0, e = std::min(hi, j0 + n) - j0;
                if (a >= e) continue;
                int64_t gi = s.q0 + i;
                for (int64_t g = 0; g < G_; ++g) {
                    int64_t h = hk * G_ + g;
                    const Acc L = L_[size_t(gi * p_.h_q + h)];
                    if (bwd::dead_row(L)) continue;
                    w.qp[size_t(R)] = row_ptr<Acc>(p_.q, p_.dtype,
                                                   offset(p_.q_stride, t.seq, s.q0, i, h), dqk,
                                                   &w.q[size_t(R * dqk)]);
                    Acc *dout = &w.dout[size_t(R * dv)];
                    load_row<Acc>(p_.dout, p_.dtype, offset(p_.dout_stride, t.seq, s.q0, i, h), dv, dout);
                    if (rot_.active()) rot_.apply(gi, dout);
                    w.dp_rows[size_t(R)] = dout;
                    w.query[size_t(R)] = i;
                    w.a[size_t(R)] = a;
                    w.e[size_t(R)] = e;
                    w.L[size_t(R)] = L;
                    w.D[size_t(R)] = D_[size_t(gi * p_.h_q + h)];
                    ++R;
                }
            }
            if (R == 0) continue;
            for (int64_t r = 0; r < R;) {
                int64_t m = r + 4 <= R && same_range4(&w.a[size_t(r)], &w.e[size_t(r)]) ? 4 : 1;
                weights(w, r, m, rows);
                r += m;
            }
            // Key j takes the rows whose query sees it: a contiguous run, since visibility
            // depends on the query only and rows are in query order.
            const int64_t *qb = w.query.data(), *qe = qb + R;
            for (int64_t j = 0; j < n; ++j) {
                int64_t first = p_.causal ? j0 + j - shift : std::numeric_limits<int64_t>::min();
                int64_t last = p_.window > 0 ? j0 + j - shift + p_.window  // exclusive
                                             : std::numeric_limits<int64_t>::max();
                w.r0[size_t(j)] = std::lower_bound(qb, qe, first) - qb;
                w.r1[size_t(j)] = std::lower_bound(qb, qe, last) - qb;
            }
            for (int64_t j = 0; j < n;) {
                const int64_t r0 = w.r0[size_t(j)], r1 = w.r1[size_t(j)];
                int64_t m = j + 4 <= n && same_range4(&w.r0[size_t(j)], &w.r1[size_t(j)]) ? 4 : 1;
                if (r0 < r1) {
                    Acc *dk[4], *dvr[4];
                    const Acc *wk[4], *wv[4];
                    for (int64_t x = 0; x < m; ++x) {
                        dk[x] = &w.dk[size_t((j + x) * dqk)];
                        dvr[x] = &w.dv[size_t((j + x) * dv)];
                        wk[x] = &w.wk[size_t((j + x) * rows)];
                        wv[x] = &w.wv[size_t((j + x) * rows)];
                    }
                    if (m == 4) {
                        bwd::rows4_accumulate(dk, wk, w.qp.data(), r0, r1, dqk);
                        bwd::rows4_accumulate(dvr, wv, w.dp_rows.data(), r0, r1, dv);
                    } else {
                        row_accumulate(dk[0], wk[0], w.qp.data(), r0, r1, dqk);
                        row_accumulate(dvr[0], wv[0], w.dp_rows.data(), r0, r1, dv);
                    }
                }
                j += m;
            }
        }
        for (int64_t j = 0; j < n; ++j) {
            Acc *dk = &w.dk[size_t(j * dqk)], *dvr = &w.dv[size_t(j * dv)];
            int64_t row = (s.k0 + j0 + j) * p_.h_kv + hk;
            if (alias_) {
                // Absorbed form: the value is the first d_v dims of the key row.
                for (int64_t c = 0; c < dv; ++c) dk[c] += dvr[c];
            } else {
                store_row<Acc>(p_.dv, p_.dtype, row * dv, dv, dvr);
            }
            store_row<Acc>(p_.dk, p_.dtype, row * dqk, dqk, dk);
        }
    }

    const mla_attention_params &p_;
    const bool varlen_, alias_;
    const int64_t G_, Q_;  // query heads per kv head; queries per tile / chunk
    const int threads_;
    const Acc scale_;
    const bool refine_;
    const int64_t rows_q_;
    const bwd::RowRotation rot_;
    std::vector<Seq> seqs_;
    std::vector<Tile> q_tiles_, k_tiles_;
    std::vector<Acc> D_, L_;  // per (query row, head): D_i and the sink-aware lse
    std::vector<ScratchA> scratch_a_;
    std::vector<ScratchB> scratch_b_;
};

}  // namespace

void attention_backward(const mla_attention_params &p) {
    if (p.dtype == MLA_FLOAT64) {
        DenseBackward<double> k(p);
        k.run();
    } else {
        DenseBackward<float> k(p);
        k.run();
    }
}

}  // namespace cpu
}  // namespace mla
