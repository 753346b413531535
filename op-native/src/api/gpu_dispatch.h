// How an entry point hands a call with exec.device >= 0 to the GPU, and answers the plan and
// workspace queries (mla.h, "GPU plans and workspaces"), with or without CUDA in the build.
// The entry point has made every check that needs no data before it gets here.
#pragma once
#include <cstdio>
#include "common/error.h"
#include "mla/mla.h"

namespace mla {
namespace api {

// Refusal of a GPU call when the build has no CUDA or the machine no device.
inline mla_status no_gpu(const char *op, int device) {
#ifdef MLA4J_WITH_CUDA
    if (mla_cuda_device_count() > 0) return MLA_OK;
    return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: no CUDA device is available", op, device);
#else
    return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: built without CUDA", op, device);
#endif
}

// The plan of a CPU call: the CPU kernel, no workspace.
inline void cpu_plan(mla_plan_info *info) {
    std::snprintf(info->implementation, sizeof info->implementation, "cpu");
    info->workspace_bytes = 0;
    info->refusals[0] = 0;
}

// A stand-in for a pointer a plan query was given as NULL: the queries read no data, and a
// pointer only counts for its alignment (a NULL one counts as aligned).
inline const void *placeholder() {
    alignas(256) static const char slot[256] = {0};
    return slot;
}

template <typename T>
void fill_null(T *&ptr) {
    if (!ptr) ptr = static_cast<T *>(const_cast<void *>(placeholder()));
}
template <typename T>
void fill_null(const T *&ptr) {
    if (!ptr) ptr = static_cast<const T *>(placeholder());
}

// The workspace query from the plan query: bytes, or -1 with the message set.
template <typename Params, typename PlanFn>
int64_t workspace_from_plan(const Params *p, PlanFn plan) {
    mla_plan_info info;
    if (plan(p, &info) != MLA_OK) return -1;
    return info.workspace_bytes;
}

}  // namespace api
}  // namespace mla
