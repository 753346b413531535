// RoPE (mla_rope_apply, ops.md section 7) on a CUDA device: the entry the dispatcher calls when
// exec.device >= 0. Plain C++ types only, so .cpp files include it.
#pragma once
#include "mla/mla.h"

namespace mla {
namespace cuda {

// The arguments that need no data have been checked by the caller; x, positions, the cos/sin
// tables and out are device pointers (host memory is refused) and none of their data is read
// on the host. A position outside a cos/sin table gives NaN in that token's rotated dims.
mla_status rope_apply(const mla_rope_params &p);

}  // namespace cuda
}  // namespace mla
