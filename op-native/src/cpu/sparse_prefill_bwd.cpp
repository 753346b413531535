// Sparse prefill backward on the CPU (ops.md section 3). Query i of kv head hk attends the
// kv rows indices[i, hk, t] for t < topk_length[i] (invalid entries skipped, duplicates
// counted each time); the value is the first d_v dims of the same row, so dkv receives the key
// path and the value path. Pass A walks (query, kv head): D_i, the sink-aware lse and dq.
// For the scatter-add into dkv an inverse index lists, for every (kv row, kv head), the
// queries that selected it in (query, slot) order; pass B walks it, one dkv row per item, so
// the result does not depend on the number of threads and needs no per-thread copies of dkv.
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

using bwd::axpy;
using bwd::dot;

template <typename Acc>
class SparseBackward {
public:
    explicit SparseBackward(const mla_sparse_prefill_params &p)
        : p_(p),
          G_(p.h_q / p.h_kv),
          threads_(p.exec.num_threads),
          scale_(Acc(p.softmax_scale)),
          refine_(p.dtype == MLA_FLOAT64),
          rot_(p.out_rotation, p.s_q, p.d_v, p.exec.num_threads) {
        build_inverse_index();
        D_.assign(size_t(p.s_q * p.h_q), Acc(0));
        L_.assign(size_t(p.s_q * p.h_q), Acc(0));
        scratch_a_.resize(size_t(plan_workers(p.s_q * p.h_kv, 1, threads_)));
        for (auto &s : scratch_a_) s.init(G_, p.d_qk, p.d_v);
        scratch_b_.resize(size_t(plan_workers(p.s_kv * p.h_kv, 1, threads_)));
        for (auto &s : scratch_b_) s.init(p.d_qk, p.d_v);
    }

    void run() {
        parallel_for(p_.s_q * p_.h_kv, 1, threads_, [&](int64_t begin, int64_t end, int worker) {
            for (int64_t it = begin; it < end; ++it)
                query_row(it / p_.h_kv, it % p_.h_kv, scratch_a_[size_t(worker)]);
        });
        parallel_for(p_.s_kv * p_.h_kv, 1, threads_, [&](int64_t begin, int64_t end, int worker) {
            for (int64_t it = begin; it < end; ++it) kv_row(it, scratch_b_[size_t(worker)]);
        });
        bwd::sink_gradient(p_.sink, p_.dsink, p_.s_q, p_.h_q, D_, L_);
    }

private:
    struct ScratchA {
        std::vector<Acc> q, dout, out, dq, kv, D, L;
        std::vector<bwd::OnlineLse> lse;
        void init(int64_t rows, int64_t dqk, int64_t dv) {
            q.resize(size_t(rows * dqk));
            dq.resize(size_t(rows * dqk));
            dout.resize(size_t(rows * dv));
            out.resize(size_t(dv));
            kv.resize(size_t(dqk));
            D.resize(size_t(rows));
            L.resize(size_t(rows));
            lse.resize(size_t(rows));
        }
    };
    struct ScratchB {
        std::vector<Acc> q, dout, kv, acc;
        void init(int64_t dqk, int64_t dv) {
            q.resize(size_t(dqk));
            dout.resize(size_t(dv));
            kv.resize(size_t(dqk));
            acc.resize(size_t(dqk));
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

    void load_kv(int64_t row, int64_t hk, Acc *dst) const {
        load_row<Acc>(p_.kv, p_.dtype, row * p_.kv_stride[0] + hk * p_.kv_stride[1], p_.d_qk, dst);
    }

    // Counting sort of the valid (query, slot) entries by (kv row, kv head).
    void build_inverse_index() {
        const int64_t groups = p_.s_kv * p_.h_kv;
        start_.assign(size_t(groups + 1), 0);
        for (int64_t i = 0; i < p_.s_q; ++i)
            for (int64_t hk = 0; hk < p_.h_kv; ++hk)
                for (int64_t t = 0, n = slots(i); t < n; ++t) {
                    int64_t idx = index(i, hk, t);
                    if (idx >= 0) ++start_[size_t(idx * p_.h_kv + hk + 1)];
                }
        for (int64_t g = 0; g < groups; ++g) start_[size_t(g + 1)] += start_[size_t(g)];
        queries_.resize(size_t(start_[size_t(groups)]));
        std::vector<int64_t> next(start_.begin(), start_.end() - 1);
        for (int64_t i = 0; i < p_.s_q; ++i)
            for (int64_t hk = 0; hk < p_.h_kv; ++hk)
                for (int64_t t = 0, n = slots(i); t < n; ++t) {
                    int64_t idx = index(i, hk, t);
                    if (idx >= 0) queries_[size_t(next[size_t(idx * p_.h_kv + hk)]++)] = int32_t(i);
                }
    }

    // Pass A: query i, the G query heads of kv head hk.
    void query_row(int64_t i, int64_t hk, ScratchA &w) {
        const int64_t dqk = p_.d_qk, dv = p_.d_v, n = slots(i);
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
            for (int64_t t = 0; t < n; ++t) {
                int64_t idx = index(i, hk, t);
                if (idx < 0) continue;
                load_kv(idx, hk, w.kv.data());
                for (int64_t g = 0; g < G_; ++g)
                    w.lse[size_t(g)].add(double(scale_ * dot(&w.q[size_t(g * dqk)], w.kv.data(), dqk)));
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
        for (int64_t t = 0; t < n; ++t) {
            int64_t idx = index(i, hk, t);
            if (idx < 0) continue;
            load_kv(idx, hk, w.kv.data());
            for (int64_t g = 0; g < G_; ++g) {
                Acc L = w.L[size_t(g)], D = w.D[size_t(g)];
                if (bwd::dead_row(L)) continue;
                Acc prob = std::exp(scale_ * dot(&w.q[size_t(g * dqk)], w.kv.data(), dqk) - L);
                Acc dp = dot(&w.dout[size_t(g * dv)], w.kv.data(), dv);
                axpy(prob * (dp - D), w.kv.data(), &w.dq[size_t(g * dqk)], dqk);
            }
        }
        for (int64_t g = 0; g < G_; ++g) {
            int64_t h = hk * G_ + g;
            Acc *dq = &w.dq[size_t(g * dqk)];
            for (int64_t c = 0; c < dqk; ++c) dq[c] *= scale_;
            store_row<Acc>(p_.dq, p_.dtype, (i * p_.h_q + h) * dqk, dqk, dq);
        }
    }

    // Pass B: dkv of one (kv row, kv head), summed over the queries that selected it.
    void kv_row(int64_t group, ScratchB &w) {
        const int64_t dqk = p_.d_qk, dv = p_.d_v, hk = group % p_.h_kv, row = group / p_.h_kv;
        std::fill(w.acc.begin(), w.acc.end(), Acc(0));
        int64_t e0 = start_[size_t(group)], e1 = start_[size_t(group + 1)];
        if (e0 < e1) load_kv(row, hk, w.kv.data());
        for (int64_t e = e0; e < e1; ++e) {
            int64_t i = queries_[size_t(e)];
            for (int64_t g = 0; g < G_; ++g) {
                int64_t h = hk * G_ + g;
                Acc L = L_[size_t(i * p_.h_q + h)], D = D_[size_t(i * p_.h_q + h)];
                if (bwd::dead_row(L)) continue;
                load_row<Acc>(p_.q, p_.dtype, i * p_.q_stride[0] + h * p_.q_stride[1], dqk,
                              w.q.data());
                load_row<Acc>(p_.dout, p_.dtype, i * p_.dout_stride[0] + h * p_.dout_stride[1],
                              dv, w.dout.data());
                ;
                Acc prob = std::exp(scale_ * dot(w.q.data(), w.kv.data(), dqk) - L);
                Acc dp = dot(w.dout.data(), w.kv.data(), dv);
                axpy(scale_ * prob * (dp - D), w.q.data(), w.acc.data(), dqk);  // key path
                axpy(prob, w.dout.data(), w.acc.data(), dv);                     // value path
            }
        }
        store_row<Acc>(p_.dkv, p_.dtype, group * dqk, dqk, w.acc.data());
    }

    const mla_sparse_prefill_params &p_;
    const int64_t G_;
    const int threads_;
    const Acc scale_;
    const bool refine_;
    const bwd::RowRotation rot_;
    std::vector<int64_t> start_;    // [s_kv * h_kv + 1]: entries of each (kv row, kv head)
    std::vector<int32_t> queries_;  // the selecting query of each entry
    std::vector<Acc> D_, L_;        // per (query, head): D_i and the sink-aware lse
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
