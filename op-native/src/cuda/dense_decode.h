// Dense decode on a CUDA device (ops.md section 1): the entry the dispatcher of
// mla_dense_decode calls when exec.device >= 0. Plain C++ types only, so .cpp files include it.
#pragma once
#include <cstdint>
#include "mla/mla.h"

namespace mla {
namespace cuda {

// Runs on p.exec.device, ordered on p.exec.stream, with p.exec.workspace as scratch. Every
// pointer of p (q, cache data, block_table, cache_seqlens, sink, out_rotation positions and
// tables, out, lse) is a device pointer (plain host memory is refused with
// MLA_ERR_INVALID_ARGUMENT); nothing of p's data is read on the host, so the call never
// synchronises the stream. Checks that need no data (dtypes, dims, strides, alignment,
// workspace size) are made here; data-dependent conditions are handled on the device:
// cache_seqlens are clamped to [0, max_blocks_per_seq * block_size], a block id outside
// [0, num_blocks) reads zeros instead of memory, and a rotation position outside a cos / sin
// table writes NaN in the rotated dims. FP8 caches (V32, MODEL1) are dequantised on the device
// (fp8 * tile scale, the RoPE part from bf16); with bf16 / fp16 queries the tensor-core kernel
// rounds the dequantised keys to q's dtype, so an fp16 query meets cache values beyond fp16's
// range (|x| > 65504) as infinities: use bf16 or float32 queries for such caches.
mla_status dense_decode(const mla_dense_decode_params &p);

// Bytes of workspace dense_decode needs for p (reads sizes and p.exec.device only);
// -1 with a message on bad arguments.
int64_t dense_decode_workspace_size(const mla_dense_decode_params &p);

}  // namespace cuda
}  // namespace mla
