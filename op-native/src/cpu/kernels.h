// CPU forward kernels of the attention ops (ops.md sections 1-4). They assume arguments that the
// entry points in src/api have checked: sizes, pointers, dtypes, cache layouts, block tables,
// rotation descriptors. Each may throw std::bad_alloc before it writes anything; nothing else
// escapes them.
#pragma once
#include "common/cache.h"
#include "mla/mla.h"

namespace mla {
namespace cpu {

// Section 1. `layout` is the checked layout of p.cache.
void dense_decode_fwd(const mla_dense_decode_params &p, const CacheLayout &layout);

// Section 2. `extra` is null when the extra key set is absent.
void sparse_decode_fwd(const mla_sparse_decode_params &p, const CacheLayout &keys,
                       const CacheLayout *extra);

// Section 3, forward.
void sparse_prefill_fwd(const mla_sparse_prefill_params &p);

// Section 4, forward, batched or variable-length.
void attention_fwd(const mla_attention_params &p);

}  // namespace cpu
}  // namespace mla
