// Lightning indexer backward (ops.md section 6): from dscores [b, s_q, s_k] to dq, dk, dw
// (float32, overwritten), the gradients with respect to the dequantised q and k.
// With z = q[t, j] . k[s] and g = dscores[t, s]:
//   dw[t, j] = sum_s g relu(z),  dq[t, j] = sum_s g w[t, j] [z > 0] k[s],
//   dk[s]    = sum_{t, j} g w[t, j] [z > 0] q[t, j],
// over visible (unmasked) pairs only; relu'(0) = 0. Two passes, each owning its outputs: rows
// of queries for dq and dw, tiles of keys for dk (z is recomputed, nothing of size s_q x s_k
// is stored).
#include <algorithm>
#include <vector>
#include "common/parallel.h"
#include "cpu/indexer_common.h"
#include "cpu/misc_kernels.h"

namespace mla {
namespace cpu {

namespace {

template <typename Acc>
struct Scratch {
    std::vector<Acc> q, w, k, grad_a, grad_b;
};

template <typename Acc>
inline void axpy(Acc *y, Acc a, const Acc *x, int64_t d) {
    for (int64_t i = 0; i < d; ++i) y[i] += a * x[i];
}

template <typename Acc>
void query_rows_pass(const mla_indexer_params &p) {
    IndexerOperand<Acc> qo{p.q, p.q_dtype, p.q_scale, p.d};
    IndexerOperand<Acc> ko{p.k, p.k_dtype, p.k_scale, p.d};
    int64_t rows = p.b * p.s_q, h = p.h, d = p.d;
    int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, p.s_k * h * d));
    int workers = plan_workers(rows, grain, p.exec.num_threads);
    std::vector<Scratch<Acc>> scratch(workers);
    for (auto &sc : scratch) {
        sc.q.resize(size_t(h * d));
        sc.w.resize(size_t(h));
        sc.k.resize(size_t(kIndexerKeyTile * d));
        sc.grad_a.resize(size_t(h * d));
        sc.grad_b.resize(size_t(h));
    }
    parallel_for(rows, grain, p.exec.num_threads, [&](int64_t r0, int64_t r1, int worker) {
        Scratch<Acc> &sc = scratch[worker];
        for (int64_t r = r0; r < r1; ++r) {
            int64_t b = r / p.s_q, t = r % p.s_q;
            const Acc *q = qo.rows(r * h, h, sc.q.data());
            load_row<Acc>(p.w, p.w_dtype, r * h, h, sc.w.data());
            Acc *dq = sc.grad_a.data(), *dw = sc.grad_b.data();
            std::fill(sc.grad_a.begin(), sc.grad_a.end(), Acc(0));
            std::fill(sc.grad_b.begin(), sc.grad_b.end(), Acc(0));
            const float *g = p.dscores + r * p.s_k;
            int64_t visible = indexer_visible_keys(p, t);
            for (int64_t s0 = 0; s0 < visible; s0 += kIndexerKeyTile) {
                int64_t n = std::min(kIndexerKeyTile, visible - s0);
                const Acc *k = ko.rows(b * p.s_k + s0, n, sc.k.data());
                for (int64_t s = 0; s < n; ++s) {
                    Acc gs = g[s0 + s];
                    if (gs == 0) continue;
                    for (int64_t j = 0; j < h; ++j) {
                        Acc z = indexer_dot(q + j * d, k + s * d, d);
                        if (!(z > 0)) continue;
                        dw[j] += gs * z;
                        axpy(dq + j * d, gs * sc.w[j], k + s * d, d);
                    }
                }
            }
            store_row<Acc>(p.dq, MLA_FLOAT32, r * h * d, h * d, dq);
            store_row<Acc>(p.dw, MLA_FLOAT32, r * h, h, dw);
        }
    });
}

template <typename Acc>
void key_tiles_pass(const mla_indexer_params &p) {
    IndexerOperand<Acc> qo{p.q, p.q_dtype, p.q_scale, p.d};
    IndexerOperand<Acc> ko{p.k, p.k_dtype, p.k_scale, p.d};
    int64_t h = p.h, d = p.d;
    int64_t tiles = (p.s_k + kIndexerKeyTile - 1) / kIndexerKeyTile;
    int64_t units = p.b * tiles;
    int workers = plan_workers(units, 1, p.exec.num_threads);
    std::vector<Scratch<Acc>> scratch(workers);
    for (auto &sc : scratch) {
        sc.q.resize(size_t(h * d));
        sc.w.resize(size_t(h));
        sc.k.resize(size_t(kIndexerKeyTile * d));
        sc.grad_a.resize(size_t(kIndexerKeyTile * d));
    }
    parallel_for(units, 1, p.exec.num_threads, [&](int64_t u0, int64_t u1, int worker) {
        Scratch<Acc> &sc = scratch[worker];
        for (int64_t u = u0; u < u1; ++u) {
            int64_t b = u / tiles, s0 = (u % tiles) * kIndexerKeyTile;
            int64_t n = std::min(kIndexerKeyTile, p.s_k - s0);
            const Acc *k = ko.rows(b * p.s_k + s0, n, sc.k.data());
            Acc *dk = sc.grad_a.data();
            std::fill(dk, dk + n * d, Acc(0));
            // First query row that sees key s0: s0 <= t + s_k - s_q.
            int64_t t_first = p.causal ? std::max<int64_t>(0, s0 - p.s_k + p.s_q) : 0;
            for (int64_t t = t_first; t < p.s_q; ++t) {
                int64_t r = b * p.s_q + t;
                int64_t s_end = std::min(s0 + n, indexer_visible_keys(p, t));
                const float *g = p.dscores + r * p.s_k;
                bool any = false;
                for (int64_t s = s0; s < s_end && !any; ++s) any = g[s] != 0;
                if (!any) continue;
                const Acc *q = qo.rows(r * h, h, sc.q.data());
                load_row<Acc>(p.w, p.w_dtype, r * h, h, sc.w.data());
                for (int64_t s = s0; s < s_end; ++s) {
                    Acc gs = g[s];
                    if (gs == 0) continue;
                    for (int64_t j = 0; j < h; ++j) {
                        Acc z = indexer_dot(q + j * d, k + (s - s0) * d, d);
                        if (z > 0) axpy(dk + (s - s0) * d, gs * sc.w[j], q + j * d, d);
                    }
                }
            }
            store_row<Acc>(p.dk, MLA_FLOAT32, (b * p.s_k + s0) * d, n * d, dk);
        }
    });
}

template <typename Acc>
void scores_bwd(const mla_indexer_params &p) {
    query_rows_pass<Acc>(p);
    key_tiles_pass<Acc>(p);
}

}  // namespace

void indexer_scores_bwd(const mla_indexer_params &p) {
    if (indexer_uses_double(p))
        scores_bwd<double>(p);
    else
        scores_bwd<float>(p);
}

}  // namespace cpu
}  // namespace mla
