// Embedding lookup (ops.md section 9): a row gather forward, a scatter-add backward.
#include <algorithm>
#include <cstring>
#include <vector>
#include "common/dtype.h"
#include "common/parallel.h"
#include "cpu/misc_kernels.h"

namespace mla {
namespace cpu {

void embedding_fwd(const mla_embedding_params &p) {
    const int64_t es = dtype_size(p.dtype), row_bytes = p.dim * es;
    const char *table = static_cast<const char *>(p.table);
    char *out = static_cast<char *>(p.out);
    int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(row_bytes, 1));
    parallel_for(p.n, grain, p.exec.num_threads, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i)
            std::memcpy(out + i * row_bytes, table + p.indices[i] * p.table_stride * es, size_t(row_bytes));
    });
}

namespace {

// dtable row v = sum over the positions of id v (in order) of the dout rows, in Acc.
template <typename Acc>
void scatter_add(const mla_embedding_params &p, const std::vector<int64_t> &start,
                 const std::vector<int64_t> &positions) {
    const int64_t dim = p.dim;
    int64_t grain = std::max<int64_t>(1, 16384 / dim);
    int workers = plan_workers(p.vocab, grain, p.exec.num_threads);
    std::vector<std::vector<Acc>> acc(workers, std::vector<Acc>(size_t(2 * dim)));
    parallel_for(p.vocab, grain, p.exec.num_threads, [&](int64_t v0, int64_t v1, int worker) {
        Acc *sum = acc[worker].data(), *row = sum + dim;
        for (int64_t v = v0; v < v1; ++v) {
            std::fill(sum, sum + dim, Acc(0));
            for (int64_t k = start[v]; k < start[v + 1]; ++k) {
                load_row<Acc>(p.dout, p.dtype, positions[k] * dim, dim, row);
                for (int64_t j = 0; j < dim; ++j) sum[j] += row[j];
            }
            store_row<Acc>(p.dtable, p.dtype, v * dim, dim, sum);
        }
    });
}

}  // namespace

void embedding_bwd(const mla_embedding_params &p) {
    // Positions grouped by id (a counting sort, stable: each id keeps its positions in order).
    std::vector<int64_t> start(size_t(p.vocab + 1), 0), positions(size_t(p.n));
    for (int64_t i = 0; i < p.n; ++i) ++start[p.indices[i] + 1];
    for (int64_t v = 0; v < p.vocab; ++v) start[v + 1] += start[v];
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < p.n; ++i) positions[next[p.indices[i]]++] = i;
    if (p.dtype == MLA_FLOAT64)
        scatter_add<double>(p, start, positions);
    else
        scatter_add<float>(p, start, positions);
}

}  // namespace cpu
}  // namespace mla
