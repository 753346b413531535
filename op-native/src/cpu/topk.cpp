// Top-k selection (ops.md section 6): descending scores, ties to the lower index, -inf and
// NaN never chosen, -1 where fewer than k entries remain.
#include <algorithm>
#include <cmath>
#include <vector>
#include "common/parallel.h"
#include "cpu/misc_kernels.h"

namespace mla {
namespace cpu {

void topk_row(const float *scores, int64_t n, int64_t k, int32_t *scratch, int32_t *indices,
              float *values) {
    int64_t count = 0;
    for (int64_t s = 0; s < n; ++s)
        if (scores[s] > -INFINITY) scratch[count++] = int32_t(s);  // false for -inf and NaN
    // A strict total order on the candidates (none is NaN): larger score first, then index.
    auto before = [scores](int32_t a, int32_t b) {
        return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    };
    int64_t m = std::min(k, count);
    if (m < count) std::nth_element(scratch, scratch + m, scratch + count, before);
    std::sort(scratch, scratch + m, before);
    for (int64_t i = 0; i < m; ++i) indices[i] = scratch[i];
    for (int64_t i = m; i < k; ++i) indices[i] = -1;
    if (values) {
        for (int64_t i = 0; i < m; ++i) values[i] = scores[scratch[i]];
        for (int64_t i = m; i < k; ++i) values[i] = -INFINITY;
    }
}

void topk(const mla_topk_params &p) {
    int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(p.n, 1));
    int workers = plan_workers(p.rows, grain, p.exec.num_threads);
    std::vector<std::vector<int32_t>> scratch(workers, std::vector<int32_t>(size_t(p.n)));
    parallel_for(p.rows, grain, p.exec.num_threads, [&](int64_t r0, int64_t r1, int worker) {
        for (int64_t r = r0; r < r1; ++r)
            topk_row(p.scores + r * p.n, p.n, p.k, scratch[worker].data(), p.indices + r * p.k,
                     p.values ? p.values + r * p.k : nullptr);
    });
}

}  // namespace cpu
}  // namespace mla
