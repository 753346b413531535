// Sparse prefill backward on the CPU (ops.md section 3). Query i of kv head hk attends the
// kv rows indices[i, hk, t] for t < topk_length[i] (invalid entries skipped, duplicates
// counted each time); the value is the first d_v dims of the same row, so dkv receives the key
// path and the value path.
//  Pass A, per (query, kv head): D_i, the sink-aware lse and dq of the G query heads.
//  Pass B, the scatter-add into dkv: the kv rows are cut into ranges holding about equal
//  numbers of selections; each work item owns one range, walks every query in order and adds
//  the contributions of the selections that land in its range (the query's G head rows are
//  loaded once per item and query, then reused by all those selections). A dkv row is thus
//  always summed in (query, slot, head) order, whatever the number of threads or ranges, with
//  no per-thread copies of dkv and no locks.
#include <algorithm>
#include <cmath>
#include <cstdint>
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

constexpr int64_t kKeyTile = 64;        // selected kv rows gathered together in pass A
constexpr int64_t kRangesPerWorker = 4;  // pass-B ranges per worker, for load balance

template <typename Acc>
class SparseBackward {
public:
    explicit SparseBackward(const mla_sparse_prefill_params &p)
        : p_(p),
          G_(p.h_q / p.h_kv),
          threads_(p.exec.num_threads),
          scale_(Acc(p.softmax_scale)),
          refine_(p.dtype == MLA_FLOAT64),
          native_(p.dtype == (sizeof(Acc) == 8 ? MLA_FLOAT64 : MLA_FLOAT32)),
          rot_(p.out_rotation, p.s_q, p.d_v, p.exec.num_threads) {
        D_.assign(size_t(p.s_q * p.h_q), Acc(0));
        L_.assign(size_t(p.s_q * p.h_q), Acc(0));
        plan_ranges();
        // dkv of the dtype itself is accumulated in place; other dtypes go through Acc.
        if (!native_) dkv_acc_.assign(size_t(p.s_kv * p.h_kv * p.d_qk), Acc(0));
        scratch_a_.resize(size_t(plan_workers(p.s_q * p.h_kv, 1, threads_)));
        for (auto &s : scratch_a_) s.init(G_, p.d_qk, p.d_v);
        scratch_b_.resize(size_t(plan_workers(int64_t(ranges_.size()) - 1, 1, threads_)));
        for (auto &s : scratch_b_) s.init(G_, p.d_qk, p.d_v, p.topk);
    }

    void run() {
        parallel_for(p_.s_q * p_.h_kv, 1, threads_, [&](int64_t begin, int64_t end, int worker) {
            for (int64_t it = begin; it < end; ++it)
                query_row(it / p_.h_kv, it % p_.h_kv, scratch_a_[size_t(worker)]);
        });
        parallel_for(int64_t(ranges_.size()) - 1, 1, threads_,
                     [&](int64_t begin, int64_t end, int worker) {
                         for (int64_t it = begin; it < end; ++it)
                             kv_range(ranges_[size_t(it)], ranges_[size_t(it + 1)],
                                      scratch_b_[size_t(worker)]);
                     });
        bwd::sink_gradient(p_.sink, p_.dsink, p_.s_q, p_.h_q, D_, L_);
    }

private:
    struct ScratchA {
        std::vector<Acc> q, dout, out, dq, s, dp, D, L, kv;
        std::vector<const Acc *> kp;  // rows of the gathered tile
        std::vector<bwd::OnlineLse> lse;
        std::vector<int64_t> live;    // heads whose lse is finite
        void init(int64_t rows, int64_t dqk, int64_t dv) {
            q.resize(size_t(rows * dqk));
            dq.resize(size_t(rows * dqk));
            dout.resize(size_t(rows * dv));
            out.resize(size_t(dv));
            s.resize(size_t(4 * kKeyTile));
            dp.resize(size_t(4 * kKeyTile));
            live.resize(size_t(rows));
            D.resize(size_t(rows));
            L.resize(size_t(rows));
            kv.resize(size_t(kKeyTile * dqk));
            kp.resize(size_t(kKeyTile));
            lse.resize(size_t(rows));
        }
    };
    struct ScratchB {
        std::vector<Acc> q, dout, kv, lse, D, wk, wv;
        std::vector<Acc> spare;  // [3, d_qk]: accumulators of padding slots, never read
        std::vector<const Acc *> qp, dp_rows;
        std::vector<int64_t> rows;  // kv rows of one query's selections in the range
        void init(int64_t heads, int64_t dqk, int64_t dv, int64_t topk) {
            q.resize(size_t(heads * dqk));
            dout.resize(size_t(heads * dv));
            kv.resize(size_t(4 * dqk));
            spare.resize(size_t(3 * dqk));
            lse.resize(size_t(heads));
            D.resize(size_t(heads));
            wk.resize(size_t(4 * heads));
            wv.resize(size_t(4 * heads));
            qp.resize(size_t(heads));
            dp_rows.resize(size_t(heads));
            rows.resize(size_t(std::max<int64_t>(topk, 1)));
        }
    };

    // Selected slots of query i: the first topk_length[i] (clamped to [0, topk]).
    int64_t slots(int64_t i) const {
        if (!p_.topk_length) return p_.topk;
        return std::min<int64_t>(p_.topk, std::max<int64_t>(0, p_.topk_length[i]));
    }

    // The kv row of slot t of query i, kv head hk; -1 when invalid.
    int64_t index(int64_t i, int64_t hk, int64_t t) const {
        int64_t idx = p_.indices[i * p_.indices_stride[0] + hk * p_.indices_stride[1] + t];
        return idx >= 0 && idx < p_.s_kv ? idx : -1;
    }

    const Acc *kv_row_ptr(int64_t row, int64_t hk, Acc *buf) const {
        return row_ptr<Acc>(p_.kv, p_.dtype, row * p_.kv_stride[0] + hk * p_.kv_stride[1],
                            p_.d_qk, buf);
    }

    // Cuts the kv rows into ranges [ranges_[k], ranges_[k + 1]) holding about equal numbers of
    // selections (summed over the kv heads), a few per worker.
    void plan_ranges() {
        std::vector<int64_t> count(size_t(p_.s_kv), 0);
        int64_t total = 0;
        for (int64_t i = 0; i < p_.s_q; ++i)
            for (int64_t hk = 0; hk < p_.h_kv; ++hk)
                for (int64_t t = 0, n = slots(i); t < n; ++t) {
                    int64_t idx = index(i, hk, t);
                    if (idx >= 0) ++count[size_t(idx)], ++total;
                }
        int64_t parts = std::min<int64_t>(
            std::max<int64_t>(p_.s_kv, 1),
            kRangesPerWorker * plan_workers(std::max<int64_t>(p_.s_kv, 1), 1, threads_));
        ranges_.assign(1, 0);
        int64_t seen = 0;
        for (int64_t row = 0; row < p_.s_kv; ++row) {
            seen += count[size_t(row)];
            int64_t k = int64_t(ranges_.size());  // the boundary this row may close
            if (k < parts && seen * parts >= total * k && row + 1 < p_.s_kv) ranges_.push_back(row + 1);
        }
        ranges_.push_back(p_.s_kv);
    }

    // Gathers the valid selected rows of query i, kv head hk, from slot *t on into the tile;
    // returns how many (0 when the slots are exhausted).
    int64_t gather(int64_t i, int64_t hk, int64_t *t, int64_t n_slots, ScratchA &w) const {
        int64_t n = 0;
        for (; *t < n_slots && n < kKeyTile; ++*t) {
            int64_t idx = index(i, hk, *t);
            if (idx < 0) continue;  // invalid: skipped, never read
            w.kp[size_t(n)] = kv_row_ptr(idx, hk, &w.kv[size_t(n * p_.d_qk)]);
            ++n;
        }
        return n;
    }

    // Pass A: query i, the G query heads of kv head hk.
    void query_row(int64_t i, int64_t hk, ScratchA &w) {
        const int64_t dqk = p_.d_qk, dv = p_.d_v, n_slots = slots(i);
        for (int64_t g = 0; g < G_; ++g) {
            int64_t h = hk * G_ + g;
            Acc *dout = &w.dout[size_t(g * dv)];
            load_row<Acc>(p_.q, p_.dtype, i * p_.q_stride[0] + h * p_.q_stride[1], dqk,
                          &w.q[size_t(g * dqk)]);
            load_row<Acc>(p_.dout, p_.dtype, i * p_.dout_stride[0] + h * p_.dout_stride[1], dv, dout);
            load_row<Acc>(p_.out, p_.dtype, i * p_.out_stride[0] + h * p_.out_stride[1], dv,
                          w.out.data());
            w.D[size_t(g)] = Acc(bwd::dot_wide(dout, w.out.data(), dv));
            if (rot_.active()) rot_.apply(i, dout);
            std::fill_n(&w.dq[size_t(g * dqk)], dqk, Acc(0));
            w.L[size_t(g)] = refine_ ? Acc(0) : Acc(p_.lse[i * p_.h_q + h]);
        }
        if (refine_) {
            // float64: lse in double from the scores, not the forward's float32 lse.
            std::fill_n(w.lse.begin(), G_, bwd::OnlineLse());
            int64_t t = 0;
            while (int64_t n = gather(i, hk, &t, n_slots, w)) {
                for (int64_t g = 0; g < G_; ++g) {
                    row_dots(&w.q[size_t(g * dqk)], w.kp.data(), 0, n, dqk, w.s.data());
                    for (int64_t j = 0; j < n; ++j) w.lse[size_t(g)].add(double(scale_ * w.s[size_t(j)]));
                }
            }
            for (int64_t g = 0; g < G_; ++g) w.L[size_t(g)] = Acc(w.lse[size_t(g)].value());
        }
        for (int64_t g = 0; g < G_; ++g) {
            int64_t h = hk * G_ + g;
            double l = w.L[size_t(g)];
            if (p_.sink) l = bwd::add_sink(l, p_.sink[h]);
            w.L[size_t(g)] = Acc(l);
            D_[size_t(i * p_.h_q + h)] = w.D[size_t(g)];
            L_[size_t(i * p_.h_q + h)] = w.L[size_t(g)];
        }
        int64_t live = 0;  // heads with a finite lse, four at a time below
        for (int64_t g = 0; g < G_; ++g)
            if (!bwd::dead_row(w.L[size_t(g)])) w.live[size_t(live++)] = g;
        int64_t t = 0;
        while (int64_t n = gather(i, hk, &t, n_slots, w)) {
            for (int64_t x = 0; x < live;) {
                int64_t m = x + 4 <= live ? 4 : 1;
                dq_heads(w, &w.live[size_t(x)], m, n);
                x += m;
            }
        }
        for (int64_t g = 0; g < G_; ++g) {
            int64_t h = hk * G_ + g;
            Acc *dq = &w.dq[size_t(g * dqk)];
            for (int64_t c = 0; c < dqk; ++c) dq[c] *= scale_;
            store_row<Acc>(p_.dq, p_.dtype, (i * p_.h_q + h) * dqk, dqk, dq);
        }
    }

    // dq of heads g[0..m) (m = 1 or 4) from the n gathered kv rows.
    void dq_heads(ScratchA &w, const int64_t *g, int64_t m, int64_t n) {
        const int64_t dqk = p_.d_qk, dv = p_.d_v;
        const Acc *q[4], *dout[4];
        Acc *sc[4], *dp[4], *dq[4];
        for (int64_t x = 0; x < m; ++x) {
            q[x] = &w.q[size_t(g[x] * dqk)];
            dout[x] = &w.dout[size_t(g[x] * dv)];
            dq[x] = &w.dq[size_t(g[x] * dqk)];
            sc[x] = &w.s[size_t(x * kKeyTile)];
            dp[x] = &w.dp[size_t(x * kKeyTile)];
        }
        if (m == 4) {
            bwd::rows4_dots(q, w.kp.data(), 0, n, dqk, sc);
            bwd::rows4_dots(dout, w.kp.data(), 0, n, dv, dp);
        } else {
            row_dots(q[0], w.kp.data(), 0, n, dqk, sc[0]);
            row_dots(dout[0], w.kp.data(), 0, n, dv, dp[0]);
        }
        for (int64_t x = 0; x < m; ++x) {
            const Acc L = w.L[size_t(g[x])], D = w.D[size_t(g[x])];
            for (int64_t j = 0; j < n; ++j) sc[x][j] = std::exp(scale_ * sc[x][j] - L) * (dp[x][j] - D);
        }
        if (m == 4)
            bwd::rows4_accumulate(dq, sc, w.kp.data(), 0, n, dqk);
        else
            row_accumulate(dq[0], sc[0], w.kp.data(), 0, n, dqk);
    }

    // Pass B: dkv of the kv rows [r0, r1) (all kv heads).
    void kv_range(int64_t r0, int64_t r1, ScratchB &w) {
        const int64_t dqk = p_.d_qk, dv = p_.d_v;
        Acc *dkv = native_ ? static_cast<Acc *>(p_.dkv) : dkv_acc_.data();
        std::fill(dkv + r0 * p_.h_kv * dqk, dkv + r1 * p_.h_kv * dqk, Acc(0));
        for (int64_t i = 0; i < p_.s_q; ++i)
            for (int64_t hk = 0; hk < p_.h_kv; ++hk) {
                int64_t n = 0;
                for (int64_t t = 0, n_slots = slots(i); t < n_slots; ++t) {
                    int64_t idx = index(i, hk, t);
                    if (idx >= r0 && idx < r1) w.rows[size_t(n++)] = idx;
                }
                if (n == 0) continue;
                // The live query heads of (i, hk); rows whose lse is +inf contribute nothing.
                int64_t R = 0;
                for (int64_t g = 0; g < G_; ++g) {
                    int64_t h = hk * G_ + g;
                    const Acc L = L_[size_t(i * p_.h_q + h)];
                    if (bwd::dead_row(L)) continue;
                    w.qp[size_t(R)] = row_ptr<Acc>(p_.q, p_.dtype,
                                                   i * p_.q_stride[0] + h * p_.q_stride[1], dqk,
                                                   &w.q[size_t(R * dqk)]);
                    Acc *dout = &w.dout[size_t(R * dv)];
                    load_row<Acc>(p_.dout, p_.dtype, i * p_.dout_stride[0] + h * p_.dout_stride[1],
                                  dv, dout);
                    if (rot_.active()) rot_.apply(i, dout);
                    w.dp_rows[size_t(R)] = dout;
                    w.lse[size_t(R)] = L;
                    w.D[size_t(R)] = D_[size_t(i * p_.h_q + h)];
                    ++R;
                }
                if (R == 0) continue;
                for (int64_t e = 0; e < n;) {
                    // Up to four selections of distinct rows go through the four-row kernels;
                    // short groups are padded (scores of a repeated row, zero weights into
                    // spare accumulators). Every contribution thus takes the same arithmetic
                    // wherever the range boundaries fall, which keeps dkv deterministic.
                    int64_t m = 1;
                    while (m < 4 && e + m < n &&
                           std::find(&w.rows[size_t(e)], &w.rows[size_t(e + m)],
                                     w.rows[size_t(e + m)]) == &w.rows[size_t(e + m)])
                        ++m;
                    const Acc *kv[4];
                    Acc *wk[4], *wv[4], *acc[4];
                    for (int64_t x = 0; x < 4; ++x) {
                        wk[x] = &w.wk[size_t(x * G_)];
                        wv[x] = &w.wv[size_t(x * G_)];
                        if (x < m) {
                            const int64_t row = w.rows[size_t(e + x)];
                            kv[x] = kv_row_ptr(row, hk, &w.kv[size_t(x * dqk)]);
                            acc[x] = dkv + (row * p_.h_kv + hk) * dqk;
                        } else {
                            kv[x] = kv[m - 1];
                            acc[x] = &w.spare[size_t((x - 1) * dqk)];
                        }
                    }
                    // wk <- q.kv, wv <- dout.kv[:d_v], then the weights of the two paths.
                    bwd::rows4_dots(kv, w.qp.data(), 0, R, dqk, wk);
                    bwd::rows4_dots(kv, w.dp_rows.data(), 0, R, dv, wv);
                    for (int64_t x = 0; x < 4; ++x)
                        for (int64_t r = 0; r < R; ++r) {
                            Acc prob = x < m ? std::exp(scale_ * wk[x][r] - w.lse[size_t(r)]) : Acc(0);
                            wk[x][r] = scale_ * prob * (wv[x][r] - w.D[size_t(r)]);
                            wv[x][r] = prob;
                        }
                    bwd::rows4_accumulate(acc, wk, w.qp.data(), 0, R, dqk);      // key path
                    bwd::rows4_accumulate(acc, wv, w.dp_rows.data(), 0, R, dv);  // value path
                    e += m;
                }
            }
        if (!native_)
            for (int64_t row = r0 * p_.h_kv; row < r1 * p_.h_kv; ++row)
                store_row<Acc>(p_.dkv, p_.dtype, row * dqk, dqk, dkv + row * dqk);
    }

    const mla_sparse_prefill_params &p_;
    const int64_t G_;  // query heads per kv head
    const int threads_;
    const Acc scale_;
    const bool refine_, native_;
    const bwd::RowRotation rot_;
    std::vector<int64_t> ranges_;  // pass-B kv row ranges: boundaries, first 0, last s_kv
    std::vector<Acc> D_, L_;       // per (query, head): D_i and the sink-aware lse
    std::vector<Acc> dkv_acc_;     // dkv in Acc when the dtype is narrower
    std::vector<ScratchA> scratch_a_;
    std::vector<ScratchB> scratch_b_;
};

}  // namespace

void sparse_prefill_backward(const mla_sparse_prefill_params &p) {
    if (p.dtype == MLA_FLOAT64) {
        SparseBackward<double> k(p);
        k.run();
    } else {
        SparseBackward<float> k(p);
        k.run();
    }
}

}  // namespace cpu
}  // namespace mla
