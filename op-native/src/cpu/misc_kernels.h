// CPU kernels of the KV cache ops (ops.md section 5), the lightning indexer and top-k
// (section 6), RoPE (section 7) and the embedding lookup (section 9). The entry points in
// src/api check every argument first;
// these functions assume valid arguments and write every element of their outputs.
#pragma once
#include <cstdint>
#include <functional>
#include "common/cache.h"
#include "mla/mla.h"

namespace mla {
namespace cpu {

// Runs `kernel` for the entry point `op` when exec asks for the CPU: checks exec.num_threads,
// answers MLA_ERR_UNSUPPORTED for a GPU device, and turns an exception (an allocation of
// scratch memory failing) into a status.
mla_status run_on_cpu(const mla_exec &exec, const char *op, const std::function<void()> &kernel);

// kv [num_blocks, block_size, d_qk] -> FP8 cache bytes at dst (padding bytes zeroed).
void kv_quantize(const mla_quant_params &p, const CacheLayout &layout, void *dst);
// FP8 cache bytes (p.cache.data) -> kv [num_blocks, block_size, d_qk].
void kv_dequantize(const mla_quant_params &p, const CacheLayout &layout);
// Writes the new tokens of every request at their slots; `slots[i * n_new + j]` is the
// (block, offset) pair of token j of request i, flattened as block * block_size + offset.
void kv_append(const mla_append_params &p, const CacheLayout &layout, void *dst,
               const int64_t *slots);
// Index of the first value that is not finite or above bound in magnitude, or -1.
int64_t find_unquantizable(int32_t dtype, const void *x, int64_t n, double bound, int threads);

void indexer_scores(const mla_indexer_params &p);
void indexer_topk(const mla_indexer_params &p);
void indexer_scores_bwd(const mla_indexer_params &p);

void topk(const mla_topk_params &p);

void rope_apply(const mla_rope_params &p);

// out[i] = table[indices[i]] (ids checked by the caller).
void embedding_fwd(const mla_embedding_params &p);
// dtable = scatter-add of the dout rows by id (every row of dtable written).
void embedding_bwd(const mla_embedding_params &p);

}  // namespace cpu
}  // namespace mla
