// Host pieces the decode-shaped op families share (dense decode, sparse decode, sparse
// prefill forward): the split-KV plan and its workspace, kernel arguments made from the C
// ABI's structs, and the checks only the GPU path can make.
#pragma once
#include <cstdint>
#include "cuda/common/decode_args.cuh"
#include "mla/mla.h"

namespace mla {
namespace cuda {

// Split-KV: `parts` partitions per m-block and the workspace they need (common/decode_args.cuh,
// ScheduleArgs), carved as cum | part | part_lse | part_max (with_max) | part_o.
struct SplitPlan {
    int tile = 0, overhead = 0, parts = 0;
    int64_t off_cum = 0, off_part = 0, off_lse = 0, off_max = 0, off_o = 0;
    bool with_max = false;
    int64_t workspace = 0;
};

// parts = sms / n_mblocks (at least 1): one CTA per multiprocessor for the main kernel.
SplitPlan split_plan(int64_t units, int64_t n_mblocks, int64_t d_v, int sms, int tile,
                     int overhead, bool with_max);

// Checks exec.workspace against the plan and points the schedule's arrays into it.
mla_status bind_workspace(const SplitPlan &plan, const mla_exec &exec, ScheduleArgs *s,
                          const char *op);

// A cache as the kernels read it (FP8 geometry from common/cache.h; the layout was checked).
CacheArgs cache_args(const mla_cache &c);

// Softmax scale (and its log2 form), sink and the VVPA rotation (frequencies computed here
// unless tables are given).
void set_common_args(DecodeArgs *a, float softmax_scale, const float *sink,
                     const mla_out_rotation &rot, int64_t d_v);

// exec.device names a device of this machine.
mla_status check_device_ordinal(int device, const char *op);

// The rotation's frequencies travel in the kernel parameters: rope_dim <= 2 * kMaxRopePairs
// unless cos / sin tables are given (MLA_ERR_UNSUPPORTED otherwise).
mla_status check_gpu_rotation(const mla_out_rotation &rot, const char *op);

// Every pointer of the rotation is device memory.
mla_status device_rotation(const mla_out_rotation &rot, const char *op);

}  // namespace cuda
}  // namespace mla
