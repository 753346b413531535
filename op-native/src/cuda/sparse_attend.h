// Sparse decode (ops.md section 2) and the sparse prefill forward (section 3) on a CUDA device:
// one op family, since a prefill query is a decode request of one query whose keys are rows
// of kv (a PLAIN cache of block size 1). The entries the API calls when exec.device >= 0,
// after it has made every check that needs no data. Plain C++ types only.
#pragma once
#include "mla/mla.h"

namespace mla {
namespace cuda {

// Run on p.exec.device, ordered on p.exec.stream, with p.exec.workspace as scratch. Every
// pointer of p is a device pointer (plain host memory is refused with
// MLA_ERR_INVALID_ARGUMENT); nothing of p's data is read on the host, so a call never
// synchronises the stream. Data-dependent conditions are settled on the device: an index
// that is negative or not below the key set's num_blocks * block_size (s_kv) is skipped and
// never read, lengths are clamped to [0, topk], and a rotation position outside a cos / sin
// table writes NaN in the rotated dims. FP8 rows are dequantised as the CPU does (fp8 * tile
// scale, the RoPE part from bf16) and, with bf16 / fp16 queries, rounded to q's dtype.
mla_status sparse_decode(const mla_sparse_decode_params &p);
mla_status sparse_decode_plan(const mla_sparse_decode_params &p, mla_plan_info *info);
mla_status sparse_prefill_fwd(const mla_sparse_prefill_params &p);
mla_status sparse_prefill_fwd_plan(const mla_sparse_prefill_params &p, mla_plan_info *info);

}  // namespace cuda
}  // namespace mla
