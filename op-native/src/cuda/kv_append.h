// KV append on a CUDA device (ops.md section 5): the entry the dispatcher of mla_kv_append
// calls when exec.device >= 0. Plain C++ types only, so .cpp files include it.
#pragma once
#include "common/cache.h"
#include "mla/mla.h"

namespace mla {
namespace cuda {

// Writes the new tokens of p into `cache` (its data is the buffer written: p.cache_out or
// p.cache.data), laid out as `layout` says, on p.exec.device in stream order on p.exec.stream.
// The arguments that need no data have been checked by the caller; every pointer is a device
// pointer (host memory is refused) and none of their data is read on the host. The
// data-dependent rules (requests that do not fit, bad block ids, two tokens on one slot) are
// applied on the device as include/mla/mla.h documents for mla_kv_append.
mla_status kv_append(const mla_append_params &p, const mla_cache &cache,
                     const CacheLayout &layout);

}  // namespace cuda
}  // namespace mla
