// Top-k of one row of float scores (ops.md section 6), shared by mla_topk and the fused
// indexer top-k: descending scores, ties to the lower index, -inf and NaN never chosen, -1
// (and -inf values) where fewer than k entries remain.
//
// Each score maps to a 32-bit key whose unsigned order is the wanted order (larger score =
// smaller key; -0 and +0 equal). A radix selection on the key's bytes, most significant
// first, finds the k smallest keys (each level keeps only the bucket that holds the k-th);
// the winners, as 64-bit entries key << 32 | index, are then sorted by a radix sort.
#pragma once
#include <cstdint>
#include <vector>

namespace mla {
namespace cpu {

// Buffers of one thread, sized for rows of up to n scores.
struct TopkScratch {
    std::vector<uint32_t> key, bucket;
    std::vector<uint64_t> win, cand, tmp;  // entries: key << 32 | index
    std::vector<uint16_t> ids;
    void reserve(int64_t n);
};

// Writes the k indices (and values when not null) of row scores[0, n).
void topk_row(const float *scores, int64_t n, int64_t k, TopkScratch &scratch, int32_t *indices,
              float *values);

}  // namespace cpu
}  // namespace mla
