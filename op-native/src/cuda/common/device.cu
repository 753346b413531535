// CUDA device discovery and the runtime layer behind the mla_cuda_* API (cuda/runtime.h).
// The library must load and answer on machines with no GPU or no driver: device_count() turns
// every runtime error into "no usable device".
#include <cuda_runtime.h>
#include <cstdint>
#include <cstring>
#include "cuda/common/check.cuh"
#include "cuda/runtime.h"

namespace mla {
namespace cuda {

int32_t device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free error so later calls start clean
        return 0;
    }
    return n;
}

mla_status device_info(int32_t device, mla_cuda_device_info *info) {
    const char *op = "mla_cuda_device_info_get";
    MLA_REQUIRE(info != nullptr, "%s: info must not be null", op);
    int n = device_count();
    MLA_REQUIRE(device >= 0 && device < n, "%s: device must be in [0, %d), got %d", op, n,
                device);
    cudaDeviceProp prop;
    MLA_CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    std::memset(info, 0, sizeof *info);
    std::strncpy(info->name, prop.name, sizeof info->name - 1);
    info->major = prop.major;
    info->minor = prop.minor;
    info->multiprocessors = prop.multiProcessorCount;
    info->max_smem_per_block = int32_t(prop.sharedMemPerBlockOptin);
    info->total_memory = int64_t(prop.totalGlobalMem);
    info->l2_bytes = prop.l2CacheSize;
    return MLA_OK;
}

mla_status set_device(int32_t device) {
    const char *op = "mla_cuda_set_device";
    int n = device_count();
    MLA_REQUIRE(device >= 0 && device < n, "%s: device must be in [0, %d), got %d", op, n,
                device);
    MLA_CUDA_TRY(cudaSetDevice(device));
    return MLA_OK;
}

mla_status get_device(int32_t *device) {
    const char *op = "mla_cuda_get_device";
    MLA_REQUIRE(device != nullptr, "%s: device must not be null", op);
    int d = 0;
    MLA_CUDA_TRY(cudaGetDevice(&d));
    *device = d;
    return MLA_OK;
}

mla_status device_synchronize() {
    const char *op = "mla_cuda_device_synchronize";
    MLA_CUDA_TRY(cudaDeviceSynchronize());
    return MLA_OK;
}

mla_status malloc_device(void **ptr, int64_t bytes) {
    const char *op = "mla_cuda_malloc";
    MLA_REQUIRE(ptr != nullptr, "%s: ptr must not be null", op);
    MLA_REQUIRE(bytes >= 0, "%s: bytes must be >= 0, got %lld", op, (long long)bytes);
    *ptr = nullptr;
    if (bytes == 0) return MLA_OK;
    MLA_CUDA_TRY(cudaMalloc(ptr, size_t(bytes)));
    return MLA_OK;
}

mla_status free_device(void *ptr) {
    const char *op = "mla_cuda_free";
    if (ptr) MLA_CUDA_TRY(cudaFree(ptr));
    return MLA_OK;
}

mla_status malloc_host(void **ptr, int64_t bytes) {
    const char *op = "mla_cuda_malloc_host";
    MLA_REQUIRE(ptr != nullptr, "%s: ptr must not be null", op);
    MLA_REQUIRE(bytes >= 0, "%s: bytes must be >= 0, got %lld", op, (long long)bytes);
    *ptr = nullptr;
    if (bytes == 0) return MLA_OK;
    MLA_CUDA_TRY(cudaMallocHost(ptr, size_t(bytes)));
    return MLA_OK;
}

mla_status free_host(void *ptr) {
    const char *op = "mla_cuda_free_host";
    if (ptr) MLA_CUDA_TRY(cudaFreeHost(ptr));
    return MLA_OK;
}

mla_status memcpy(void *dst, const void *src, int64_t bytes, int32_t kind, void *stream,
                  bool async) {
    const char *op = async ? "mla_cuda_memcpy_async" : "mla_cuda_memcpy";
    MLA_REQUIRE(bytes >= 0, "%s: bytes must be >= 0, got %lld", op, (long long)bytes);
    if (bytes == 0) return MLA_OK;
    MLA_REQUIRE(dst != nullptr && src != nullptr, "%s: dst and src must not be null", op);
    cudaMemcpyKind k;
    switch (kind) {
        case MLA_COPY_HOST_TO_DEVICE: k = cudaMemcpyHostToDevice; break;
        case MLA_COPY_DEVICE_TO_HOST: k = cudaMemcpyDeviceToHost; break;
        case MLA_COPY_DEVICE_TO_DEVICE: k = cudaMemcpyDeviceToDevice; break;
        default:
            return fail(MLA_ERR_INVALID_ARGUMENT,
                        "%s: kind must be 0 (host to device), 1 (device to host) or 2 (device "
                        "to device), got %d", op, kind);
    }
    if (async)
        MLA_CUDA_TRY(cudaMemcpyAsync(dst, src, size_t(bytes), k, cudaStream_t(stream)));
    else
        MLA_CUDA_TRY(cudaMemcpy(dst, src, size_t(bytes), k));
    return MLA_OK;
}

mla_status memset(void *dst, int32_t value, int64_t bytes, void *stream, bool async) {
    const char *op = async ? "mla_cuda_memset_async" : "mla_cuda_memset";
    MLA_REQUIRE(bytes >= 0, "%s: bytes must be >= 0, got %lld", op, (long long)bytes);
    if (bytes == 0) return MLA_OK;
    MLA_REQUIRE(dst != nullptr, "%s: dst must not be null", op);
    if (async)
        MLA_CUDA_TRY(cudaMemsetAsync(dst, value, size_t(bytes), cudaStream_t(stream)));
    else
        MLA_CUDA_TRY(cudaMemset(dst, value, size_t(bytes)));
    return MLA_OK;
}

mla_status stream_create(void **stream) {
    const char *op = "mla_cuda_stream_create";
    MLA_REQUIRE(stream != nullptr, "%s: stream must not be null", op);
    cudaStream_t s = nullptr;
    MLA_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    *stream = s;
    return MLA_OK;
}

mla_status stream_destroy(void *stream) {
    const char *op = "mla_cuda_stream_destroy";
    if (stream) MLA_CUDA_TRY(cudaStreamDestroy(cudaStream_t(stream)));
    return MLA_OK;
}

mla_status stream_synchronize(void *stream) {
    const char *op = "mla_cuda_stream_synchronize";
    MLA_CUDA_TRY(cudaStreamSynchronize(cudaStream_t(stream)));
    return MLA_OK;
}

mla_status event_create(void **event) {
    const char *op = "mla_cuda_event_create";
    MLA_REQUIRE(event != nullptr, "%s: event must not be null", op);
    cudaEvent_t e = nullptr;
    MLA_CUDA_TRY(cudaEventCreate(&e));
    *event = e;
    return MLA_OK;
}

mla_status event_destroy(void *event) {
    const char *op = "mla_cuda_event_destroy";
    if (event) MLA_CUDA_TRY(cudaEventDestroy(cudaEvent_t(event)));
    return MLA_OK;
}

mla_status event_record(void *event, void *stream) {
    const char *op = "mla_cuda_event_record";
    MLA_REQUIRE(event != nullptr, "%s: event must not be null", op);
    MLA_CUDA_TRY(cudaEventRecord(cudaEvent_t(event), cudaStream_t(stream)));
    return MLA_OK;
}

mla_status event_synchronize(void *event) {
    const char *op = "mla_cuda_event_synchronize";
    MLA_REQUIRE(event != nullptr, "%s: event must not be null", op);
    MLA_CUDA_TRY(cudaEventSynchronize(cudaEvent_t(event)));
    return MLA_OK;
}

mla_status event_elapsed_ms(void *start, void *end, float *ms) {
    const char *op = "mla_cuda_event_elapsed_ms";
    MLA_REQUIRE(start != nullptr && end != nullptr && ms != nullptr,
                "%s: start, end and ms must not be null", op);
    MLA_CUDA_TRY(cudaEventElapsedTime(ms, cudaEvent_t(start), cudaEvent_t(end)));
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
