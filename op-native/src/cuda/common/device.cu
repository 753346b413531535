// CUDA device discovery. The library must load and answer on machines with no GPU or no
// driver: every runtime error here means "no usable device".
#include <cuda_runtime.h>
#include <cstdint>

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

}  // namespace cuda
}  // namespace mla
