// Where an entry point of the cache, indexer, top-k and RoPE ops sends a call with
// exec.device >= 0 (ops.md section 8): to its CUDA path when the library has CUDA and a device
// exists, else MLA_ERR_UNSUPPORTED. Nothing of the pointed-to data is read before this: a
// device call's pointers are device pointers.
#pragma once
#include "common/error.h"
#include "mla/mla.h"

namespace mla {

template <typename Gpu>
mla_status run_on_device(const mla_exec &exec, const char *op, Gpu &&gpu) {
#ifdef MLA4J_WITH_CUDA
    if (mla_cuda_device_count() == 0)
        return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: no CUDA device is available", op,
                    exec.device);
    return gpu();
#else
    (void)gpu;
    return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: no GPU implementation in this build",
                op, exec.device);
#endif
}

}  // namespace mla
