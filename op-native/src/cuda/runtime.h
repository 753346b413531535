// The CUDA side of the mla_cuda_* device API (include/mla/mla.h). Plain C++ types only, so
// that the entry points in src/api/device_runtime.cpp include it whether or not CUDA is in the
// build; the definitions live in src/cuda/common/device.cu. Each function returns MLA_OK or
// MLA_ERR_DEVICE / MLA_ERR_OUT_OF_MEMORY / MLA_ERR_INVALID_ARGUMENT with a message naming `op`.
#pragma once
#include <cstdint>
#include "mla/mla.h"

namespace mla {
namespace cuda {

int32_t device_count();
mla_status device_info(int32_t device, mla_cuda_device_info *info);
mla_status set_device(int32_t device);
mla_status get_device(int32_t *device);
mla_status device_synchronize();
mla_status malloc_device(void **ptr, int64_t bytes);
mla_status free_device(void *ptr);
mla_status malloc_host(void **ptr, int64_t bytes);
mla_status free_host(void *ptr);
mla_status memcpy(void *dst, const void *src, int64_t bytes, int32_t kind, void *stream,
                  bool async);
mla_status memset(void *dst, int32_t value, int64_t bytes, void *stream, bool async);
mla_status stream_create(void **stream);
mla_status stream_destroy(void *stream);
mla_status stream_synchronize(void *stream);
mla_status event_create(void **event);
mla_status event_destroy(void *event);
mla_status event_record(void *event, void *stream);
mla_status event_synchronize(void *event);
mla_status event_elapsed_ms(void *start, void *end, float *ms);

}  // namespace cuda
}  // namespace mla
