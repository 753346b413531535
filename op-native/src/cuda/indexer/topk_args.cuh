// The parameter block of the top-k kernel (ops.md section 6): rows of float scores in, the
// indices of the k largest out (descending, ties to the lower index, -inf and NaN never
// chosen, -1 past the number of choosable entries), as cpu/topk.cpp defines them.
//
// Row i of a launch is query (b, t) = (b0 + i / nt, t0 + i % nt) of an op with s_q queries per
// batch: it reads scores + i * row_stride, keeps its first visible_keys(causal, s_q, n, t)
// entries, and writes indices + (b * s_q + t) * k (values likewise). mla_topk launches with
// b0 = t0 = 0, nt = s_q = rows, causal = 0; the fused indexer top-k over chunks of its rows.
#pragma once
#include <cstdint>

namespace mla {
namespace cuda {
namespace indexer {

// Largest k the kernel sorts (in shared memory); a larger min(k, n) is refused.
constexpr int64_t kTopkMaxSort = 16384;

struct TopkArgs {
    int64_t rows;         // rows of the launch
    const float *scores;
    int64_t row_stride;
    int64_t n;
    int64_t b0, t0, nt, s_q;
    int32_t causal;
    int32_t cache_rows;   // 1: each row's keys are staged in shared memory (n fits)
    int32_t sort_size;    // power of two >= min(k, n)
    int64_t k;
    int32_t *indices;
    float *values;        // optional
};

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
