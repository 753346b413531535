// The mla_cuda_* device API (include/mla/mla.h): device memory, copies, streams and events. With CUDA in the build each call goes to src/cuda;
// without it every call answers MLA_ERR_UNSUPPORTED ("built without CUDA").
#include "common/error.h"
#include "mla/mla.h"
#ifdef MLA4J_WITH_CUDA
#include "cuda/runtime.h"
#define MLA_DEVICE_CALL(op, expr) return (expr)
#else
#define MLA_DEVICE_CALL(op, expr) \
    return ::mla::fail(MLA_ERR_UNSUPPORTED, "%s: built without CUDA", op)
#endif

extern "C" {

mla_status mla_cuda_device_info_get(int32_t device, mla_cuda_device_info *info) {
    MLA_DEVICE_CALL("mla_cuda_device_info_get", mla::cuda::device_info(device, info));
}

mla_status mla_cuda_set_device(int32_t device) {
    MLA_DEVICE_CALL("mla_cuda_set_device", mla::cuda::set_device(device));
}

mla_status mla_cuda_get_device(int32_t *device) {
    MLA_DEVICE_CALL("mla_cuda_get_device", mla::cuda::get_device(device));
}

mla_status mla_cuda_device_synchronize(void) {
    MLA_DEVICE_CALL("mla_cuda_device_synchronize", mla::cuda::device_synchronize());
}

mla_status mla_cuda_malloc(void **ptr, int64_t bytes) {
    MLA_DEVICE_CALL("mla_cuda_malloc", mla::cuda::malloc_device(ptr, bytes));
}

mla_status mla_cuda_free(void *ptr) {
    MLA_DEVICE_CALL("mla_cuda_free", mla::cuda::free_device(ptr));
}

mla_status mla_cuda_malloc_host(void **ptr, int64_t bytes) {
    MLA_DEVICE_CALL("mla_cuda_malloc_host", mla::cuda::malloc_host(ptr, bytes));
}

mla_status mla_cuda_free_host(void *ptr) {
    MLA_DEVICE_CALL("mla_cuda_free_host", mla::cuda::free_host(ptr));
}

mla_status mla_cuda_memcpy(void *dst, const void *src, int64_t bytes, int32_t kind) {
    MLA_DEVICE_CALL("mla_cuda_memcpy", mla::cuda::memcpy(dst, src, bytes, kind, nullptr, false));
}

mla_status mla_cuda_memcpy_async(void *dst, const void *src, int64_t bytes, int32_t kind,
                                 void *stream) {
    MLA_DEVICE_CALL("mla_cuda_memcpy_async",
                    mla::cuda::memcpy(dst, src, bytes, kind, stream, true));
}

mla_status mla_cuda_memset(void *dst, int32_t byte_value, int64_t bytes) {
    MLA_DEVICE_CALL("mla_cuda_memset", mla::cuda::memset(dst, byte_value, bytes, nullptr, false));
}

mla_status mla_cuda_memset_async(void *dst, int32_t byte_value, int64_t bytes, void *stream) {
    MLA_DEVICE_CALL("mla_cuda_memset_async",
                    mla::cuda::memset(dst, byte_value, bytes, stream, true));
}

mla_status mla_cuda_stream_create(void **stream) {
    MLA_DEVICE_CALL("mla_cuda_stream_create", mla::cuda::stream_create(stream));
}

mla_status mla_cuda_stream_destroy(void *stream) {
    MLA_DEVICE_CALL("mla_cuda_stream_destroy", mla::cuda::stream_destroy(stream));
}

mla_status mla_cuda_stream_synchronize(void *stream) {
    MLA_DEVICE_CALL("mla_cuda_stream_synchronize", mla::cuda::stream_synchronize(stream));
}

mla_status mla_cuda_event_create(void **event) {
    MLA_DEVICE_CALL("mla_cuda_event_create", mla::cuda::event_create(event));
}

mla_status mla_cuda_event_destroy(void *event) {
    MLA_DEVICE_CALL("mla_cuda_event_destroy", mla::cuda::event_destroy(event));
}

mla_status mla_cuda_event_record(void *event, void *stream) {
    MLA_DEVICE_CALL("mla_cuda_event_record", mla::cuda::event_record(event, stream));
}

mla_status mla_cuda_event_synchronize(void *event) {
    MLA_DEVICE_CALL("mla_cuda_event_synchronize", mla::cuda::event_synchronize(event));
}

mla_status mla_cuda_event_elapsed_ms(void *start, void *end, float *ms) {
    MLA_DEVICE_CALL("mla_cuda_event_elapsed_ms", mla::cuda::event_elapsed_ms(start, end, ms));
}

}  // extern "C"
