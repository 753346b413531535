// Dense attention backward on the CPU (ops.md section 4), FlashAttention-2 style: no score
// matrix is kept. Pass A walks tiles of query rows (all query heads of one kv head), computes
// D_i and the sink-aware lse of every row, and dq. Pass B walks tiles of keys of one kv head
// and sums dk, dv over the query rows and heads that see them. Each output row is owned by
// one work item, so no locks and a fixed summation order.
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

using bwd::axpy;
using bwd::dot;

constexpr int64_t kKeyTile = 64;       // keys loaded (converted) together
constexpr int64_t kRowsPerItem = 64;   // query rows x grouped heads per pass-A item

struct Seq {
    int64_t q0, sq;  // first global query row, query rows
    int64_t k0, sk;  // first global key row, key rows
};

// A tile of rows [start, start + len) of sequence `seq`.
struct Tile {
    int64_t seq, start, len;
};

template <typename Acc>
class DenseBackward {
public:
    explicit DenseBackward(const mla_attention_params &p)
        : p_(p),
          varlen_(p.cu_seqlens_q != nullptr),
          alias_(p.v == p.k),
          G_(p.h_q / p.h_kv),
          threads_(p.exec.num_threads),
          scale_(Acc(p.softmax_scale)),
          refine_(p.dtype == MLA_FLOAT64),
          rot_(p.out_rotation, varlen_ ? p.total_q : p.b * p.s_q, p.d_v, p.exec.num_threads) {
        rows_q_ = varlen_ ? p.total_q : p.b * p.s_q;
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
        }
        rows_per_tile_ = std::max<int64_t>(1, kRowsPerItem / G_);
        for (int64_t b = 0; b < int64_t(seqs_.size()); ++b) {
            for (int64_t i = 0; i < seqs_[b].sq; i += rows_per_tile_)
                q_tiles_.push_back({b, i, std::min(rows_per_tile_, seqs_[b].sq - i)});
            for (int64_t j = 0; j < seqs_[b].sk; j += kKeyTile)
                k_tiles_.push_back({b, j, std::min(kKeyTile, seqs_[b].sk - j)});
        }
        D_.assign(size_t(rows_q_ * p.h_q), Acc(0));
        L_.assign(size_t(rows_q_ * p.h_q), Acc(0));
        int64_t items_a = int64_t(q_tiles_.size()) * p.h_kv;
        int64_t items_b = int64_t(k_tiles_.size()) * p.h_kv;
        scratch_a_.resize(size_t(plan_workers(items_a, 1, threads_)));
        for (auto &s : scratch_a_) s.init(rows_per_tile_ * G_, p.d_qk, p.d_v);
        scratch_b_.resize(size_t(plan_workers(items_b, 1, threads_)));
        for (auto &s : scratch_b_) s.init(p.d_qk, p.d_v);
    }

    void run() {
        int64_t items_a = int64_t(q_tiles_.size()) * p_.h_kv;
        parallel_for(items_a, 1, threads_, [&](int64_t begin, int64_t end, int worker) {
            for (int64_t it = begin; it < end; ++it)
                query_tile(q_tiles_[size_t(it / p_.h_kv)], it % p_.h_kv, scratch_a_[size_t(worker)]);
        });
        int64_t items_b = int64_t(k_tiles_.size()) * p_.h_kv;
        parallel_for(items_b, 1, threads_, [&](int64_t begin, int64_t end, int worker) {
            for (int64_t it = begin; it < end; ++it)
                key_tile(k_tiles_[size_t(it / p_.h_kv)], it % p_.h_kv, scratch_b_[size_t(worker)]);
        });
        bwd::sink_gradient(p_.sink, p_.dsink, rows_q_, p_.h_q, D_, L_);
    }

private:
    struct ScratchA {
        std::vector<Acc> q, dout, out, dq, ktile, vtile;
        std::vector<Acc> D, L;
        std::vector<int64_t> lo, hi;
        std::vector<bwd::OnlineLse> lse;
        void init(int64_t rows, int64_t dqk, int64_t dv) {
            q.resize(size_t(rows * dqk));
            dq.resize(size_t(rows * dqk));
            dout.resize(size_t(rows * dv));
            out.resize(size_t(dv));
            ktile.resize(size_t(kKeyTile * dqk));
            vtile.resize(size_t(kKeyTile * dv));
            D.resize(size_t(rows));
            L.resize(size_t(rows));
            lo.resize(size_t(rows));
            hi.resize(size_t(rows));
            lse.resize(size_t(rows));
        }
    };
    struct ScratchB {
        std::vector<Acc> q, dout, ktile, vtile, dk, dv;
        void init(int64_t dqk, int64_t dv_) {
            q.resize(size_t(dqk));
            dout.resize(size_t(dv_));
            ktile.resize(size_t(kKeyTile * dqk));
            vtile.resize(size_t(kKeyTile * dv_));
            dk.resize(size_t(kKeyTile * dqk));
            dv.resize(size_t(kKeyTile * dv_));
        }
    };

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

    // Converts keys [j0, j0 + n) of kv head hk into the tiles (values only when not aliased).
    void load_keys(const Seq &s, int64_t b, int64_t hk, int64_t j0, int64_t n, Acc *ktile,
                   Acc *vtile) const {
        for (int64_t j = 0; j < n; ++j) {
            load_row<Acc>(p_.k, p_.dtype, offset(p_.k_stride, b, s.k0, j0 + j, hk), p_.d_qk,
                          ktile + j * p_.d_qk);
            if (!alias_)
                load_row<Acc>(p_.v, p_.dtype, offset(p_.v_stride, b, s.k0, j0 + j, hk), p_.d_v,
                              vtile + j * p_.d_v);
        }
    }

    const Acc *value_row(const Acc *ktile, const Acc *vtile, int64_t j) const {
        return alias_ ? ktile + j * p_.d_qk : vtile + j * p_.d_v;
    }

    int64_t lse_index(int64_t b, int64_t h, int64_t i, int64_t global_row) const {
        return varlen_ ? h * p_.total_q + global_row : (b * p_.h_q + h) * p_.s_q + i;
    }

    // Pass A: rows of one query tile for the G query heads of kv head hk.
    void query_tile(const Tile &t, int64_t hk, ScratchA &w) {
        const Seq &s = seqs_[size_t(t.seq)];
        const int64_t dqk = p_.d_qk, dv = p_.d_v, R = t.len * G_;
        int64_t klo = s.sk, khi = 0;  // keys any live row of the tile attends
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
            load_keys(s, t.seq, hk, j0, n, w.ktile.data(), w.vtile.data());
            for (int64_t r = 0; r < R; ++r) {
                Acc L = w.L[size_t(r)], D = w.D[size_t(r)];
                if (bwd::dead_row(L)) continue;
                int64_t jl = std::max(w.lo[size_t(r)], j0), jh = std::min(w.hi[size_t(r)], j0 + n);
                const Acc *q = &w.q[size_t(r * dqk)], *dout = &w.dout[size_t(r * dv)];
                Acc *dq = &w.dq[size_t(r * dqk)];
                for (int64_t j = jl; j < jh; ++j) {
                    const Acc *k = &w.ktile[size_t((j - j0) * dqk)];
                    Acc prob = std::exp(scale_ * dot(q, k, dqk) - L);
                    Acc dp = dot(dout, value_row(w.ktile.data(), w.vtile.data(), j - j0), dv);
                    axpy(prob * (dp - D), k, dq, dqk);
                }
            }
        }
        for (int64_t r = 0; r < R; ++r) {
            int64_t h = hk * G_ + r % G_, gi = s.q0 + t.start + r / G_;
            Acc *dq = &w.dq[size_t(r * dqk)];
            for (int64_t c = 0; c < dqk; ++c) dq[c] *= scale_;
            store_row<Acc>(p_.dq, p_.dtype, (gi * p_.h_q + h) * dqk, dqk, dq);
        }
    }

    // float64: lse from the scores in double rather than the forward's float32 lse, so that
    // gradient checks are not limited by its rounding.
    void recompute_lse(const Seq &s, const Tile &t, int64_t hk, int64_t klo, int64_t khi,
                       ScratchA &w) {
        const int64_t dqk = p_.d_qk, R = t.len * G_;
        std::vector<bwd::OnlineLse> &acc = w.lse;
        std::fill_n(acc.begin(), R, bwd::OnlineLse());
        for (int64_t j0 = klo; j0 < khi; j0 += kKeyTile) {
            int64_t n = std::min(kKeyTile, khi - j0);
            for (int64_t j = 0; j < n; ++j)
                load_row<Acc>(p_.k, p_.dtype, offset(p_.k_stride, t.seq, s.k0, j0 + j, hk), dqk,
                              &w.ktile[size_t(j * dqk)]);
            for (int64_t r = 0; r < R; ++r) {
                int64_t jl = std::max(w.lo[size_t(r)], j0), jh = std::min(w.hi[size_t(r)], j0 + n);
                for (int64_t j = jl; j < jh; ++j)
                    acc[size_t(r)].add(double(scale_ * dot(&w.q[size_t(r * dqk)],
                                                           &w.ktile[size_t((j - j0) * dqk)], dqk)));
            }
        }
        for (int64_t r = 0; r < R; ++r) w.L[size_t(r)] = Acc(acc[size_t(r)].value());
    }

    // Pass B: dk and dv of one key tile of kv head hk.
    void key_tile(const Tile &t, int64_t hk, ScratchB &w) {
        const Seq &s = seqs_[size_t(t.seq)];
        const int64_t dqk = p_.d_qk, dv = p_.d_v, j0 = t.start, n = t.len;
        std::fill_n(w.dk.data(), n * dqk, Acc(0));
        std::fill_n(w.dv.data(), n * dv, Acc(0));
        int64_t ilo, ihi;
        query_range(s, j0, j0 + n, &ilo, &ihi);
        if (ilo < ihi) load_keys(s, t.seq, hk, j0, n, w.ktile.data(), w.vtile.data());
        for (int64_t i = ilo; i < ihi; ++i) {
            int64_t lo, hi;
            key_range(s, i, &lo, &hi);
            int64_t jl = std::max(lo, j0), jh = std::min(hi, j0 + n);
            if (jl >= jh) continue;
            int64_t gi = s.q0 + i;
            for (int64_t g = 0; g < G_; ++g) {
                int64_t h = hk * G_ + g;
                Acc L = L_[size_t(gi * p_.h_q + h)], D = D_[size_t(gi * p_.h_q + h)];
                if (bwd::dead_row(L)) continue;
                load_row<Acc>(p_.q, p_.dtype, offset(p_.q_stride, t.seq, s.q0, i, h), dqk,
                              w.q.data());
                load_row<Acc>(p_.dout, p_.dtype, offset(p_.dout_stride, t.seq, s.q0, i, h), dv,
                              w.dout.data());
                if (rot_.active()) rot_.apply(gi, w.dout.data());
                for (int64_t j = jl; j < jh; ++j) {
                    const Acc *k = &w.ktile[size_t((j - j0) * dqk)];
                    Acc prob = std::exp(scale_ * dot(w.q.data(), k, dqk) - L);
                    Acc dp = dot(w.dout.data(), value_row(w.ktile.data(), w.vtile.data(), j - j0), dv);
                    axpy(prob, w.dout.data(), &w.dv[size_t((j - j0) * dv)], dv);
                    axpy(prob * (dp - D), w.q.data(), &w.dk[size_t((j - j0) * dqk)], dqk);
                }
            }
        }
        for (int64_t j = 0; j < n; ++j) {
            Acc *dk = &w.dk[size_t(j * dqk)], *dvr = &w.dv[size_t(j * dv)];
            for (int64_t c = 0; c < dqk; ++c) dk[c] *= scale_;
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
    const int64_t G_;
    const int threads_;
    const Acc scale_;
    const bool refine_;
    const bwd::RowRotation rot_;
    int64_t rows_q_ = 0, rows_per_tile_ = 1;
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
