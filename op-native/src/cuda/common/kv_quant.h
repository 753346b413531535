// KV cache quantise / dequantise (mla_kv_quantize / mla_kv_dequantize, ops.md section 5) on a
// CUDA device: the entries the dispatchers call when exec.device >= 0. Plain C++ types only.
#pragma once
#include "common/cache.h"
#include "mla/mla.h"

namespace mla {
namespace cuda {

// kv -> the FP8 cache bytes of `out` (whose data is the buffer written), the same bytes as the
// CPU path. Arguments checked by the caller; device pointers only, no data read on the host.
mla_status kv_quantize(const mla_quant_params &p, const mla_cache &out, const CacheLayout &l);
// FP8 cache bytes (p.cache.data) -> kv, the same values as the CPU path.
mla_status kv_dequantize(const mla_quant_params &p, const CacheLayout &l);

}  // namespace cuda
}  // namespace mla
