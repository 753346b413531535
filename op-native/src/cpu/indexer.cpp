// Lightning indexer forward (ops.md section 6): scores[b, t, s] = sum_j w[b, t, j] *
// relu(q[b, t, j] . k[b, s]), causal bottom-right, masked -inf; and the fused scores + top-k
// that keeps one row of scores per thread instead of the [s_q, s_k] matrix.
#include <algorithm>
#include <cmath>
#include <vector>
#include "common/parallel.h"
#include "cpu/indexer_common.h"
#include "cpu/misc_kernels.h"
#include "cpu/topk_row.h"

namespace mla {
namespace cpu {

namespace {

template <typename Acc>
struct RowScratch {
    std::vector<Acc> q, w, k;
    std::vector<float> scores;   // fused top-k only
    TopkScratch topk;            // fused top-k only
};

// Scores of query row t of batch b into out[0, s_k); returns the number of visible keys.
template <typename Acc>
int64_t score_row(const mla_indexer_params &p, int64_t b, int64_t t, RowScratch<Acc> &sc,
                  float *out) {
    IndexerOperand<Acc> qo{p.q, p.q_dtype, p.q_scale, p.d};
    IndexerOperand<Acc> ko{p.k, p.k_dtype, p.k_scale, p.d};
    int64_t row = b * p.s_q + t;
    const Acc *q = qo.rows(row * p.h, p.h, sc.q.data());
    load_row<Acc>(p.w, p.w_dtype, row * p.h, p.h, sc.w.data());
    const Acc *w = sc.w.data();
    int64_t visible = indexer_visible_keys(p, t);
    for (int64_t s0 = 0; s0 < visible; s0 += kIndexerKeyTile) {
        int64_t n = std::min(kIndexerKeyTile, visible - s0);
        const Acc *k = ko.rows(b * p.s_k + s0, n, sc.k.data());
        for (int64_t s = 0; s < n; ++s) {
            Acc acc = 0;
            for (int64_t j = 0; j < p.h; ++j) {
                Acc z = indexer_dot(q + j * p.d, k + s * p.d, p.d);
                if (z > 0) acc += w[j] * z;
            }
            out[s0 + s] = float(acc);
        }
    }
    for (int64_t s = visible; s < p.s_k; ++s) out[s] = -INFINITY;
    return visible;
}

template <typename Acc>
void run_rows(const mla_indexer_params &p, bool fused) {
    int64_t rows = p.b * p.s_q;
    int64_t work = std::max<int64_t>(1, p.s_k * p.h * p.d);
    int64_t grain = std::max<int64_t>(1, 65536 / work);
    int workers = plan_workers(rows, grain, p.exec.num_threads);
    std::vector<RowScratch<Acc>> scratch(workers);
    for (auto &sc : scratch) {
        sc.q.resize(size_t(p.h * p.d));
        sc.w.resize(size_t(p.h));
        sc.k.resize(size_t(kIndexerKeyTile * p.d));
        if (fused) {
            sc.scores.resize(size_t(p.s_k));
            sc.topk.reserve(p.s_k);
        }
    }
    parallel_for(rows, grain, p.exec.num_threads, [&](int64_t r0, int64_t r1, int worker) {
        RowScratch<Acc> &sc = scratch[worker];
        for (int64_t r = r0; r < r1; ++r) {
            int64_t b = r / p.s_q, t = r % p.s_q;
            if (!fused) {
                score_row(p, b, t, sc, p.scores + r * p.s_k);
                continue;
            }
            int64_t visible = score_row(p, b, t, sc, sc.scores.data());
            topk_row(sc.scores.data(), visible, p.topk, sc.topk, p.indices + r * p.topk,
                     nullptr);
        }
    });
}

}  // namespace

void indexer_scores(const mla_indexer_params &p) {
    if (indexer_uses_double(p))
        run_rows<double>(p, false);
    else
        run_rows<float>(p, false);
}

void indexer_topk(const mla_indexer_params &p) {
    if (indexer_uses_double(p))
        run_rows<double>(p, true);
    else
        run_rows<float>(p, true);
}

}  // namespace cpu
}  // namespace mla
