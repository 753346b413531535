// Dense decode on a CUDA device (ops.md section 1): the entries the API (src/api/dense_decode.cpp)
// calls when exec.device >= 0, after it has made every check that needs no data. Plain C++
// types only, so .cpp files include it.
#pragma once
#include "mla/mla.h"

namespace mla {
namespace cuda {

// Runs on p.exec.device, ordered on p.exec.stream, with p.exec.workspace as scratch. Every
// pointer of p (q, cache data, block_table, cache_seqlens, sink, out_rotation positions and
// tables, out, lse) is a device pointer (plain host memory is refused with
// MLA_ERR_INVALID_ARGUMENT); nothing of p's data is read on the host, so the call never
// synchronises the stream and can be captured in a CUDA graph. Data-dependent conditions are
// handled on the device: cache_seqlens are clamped to [0, max_blocks_per_seq * block_size], a
// block id outside [0, num_blocks) reads zeros instead of memory, and a rotation position
// outside a cos / sin table writes NaN in the rotated dims. FP8 caches (V32, MODEL1) are
// dequantised on the device (fp8 * tile scale, the RoPE part from bf16); with bf16 / fp16
// queries the tensor-core kernel rounds the dequantised keys to q's dtype, so an fp16 query
// meets cache values beyond fp16's range (|x| > 65504) as infinities: use bf16 or float32
// queries for such caches.
mla_status dense_decode(const mla_dense_decode_params &p);

// The plan of p on p.exec.device (common/plan.h): implementation, workspace, refusals.
mla_status dense_decode_plan(const mla_dense_decode_params &p, mla_plan_info *info);

}  // namespace cuda
}  // namespace mla
