// Device properties cached per device, and the plan report of the C ABI (common/plan.h).
#include <cstdio>
#include <mutex>
#include "common/error.h"
#include "cuda/common/check.cuh"
#include "cuda/common/plan.h"

namespace mla {
namespace cuda {

mla_status device_props(int device, DeviceProps *out, const char *op) {
    constexpr int kMaxDevices = 64;
    static std::mutex mu;
    static DeviceProps cache[kMaxDevices];
    MLA_REQUIRE(device >= 0 && device < kMaxDevices, "%s: exec.device must be in [0, %d), got %d",
                op, kMaxDevices, device);
    {
        std::lock_guard<std::mutex> lock(mu);
        if (cache[device].device == device) {
            *out = cache[device];
            return MLA_OK;
        }
    }
    DeviceProps p;
    p.device = device;
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&p.major, cudaDevAttrComputeCapabilityMajor, device));
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&p.minor, cudaDevAttrComputeCapabilityMinor, device));
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&p.sms, cudaDevAttrMultiProcessorCount, device));
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&p.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    std::lock_guard<std::mutex> lock(mu);
    cache[device] = p;
    *out = p;
    return MLA_OK;
}

void fill_plan_info(mla_plan_info *info, const char *impl, int64_t workspace,
                    const std::string &refusals) {
    std::snprintf(info->implementation, sizeof info->implementation, "%s", impl ? impl : "");
    info->workspace_bytes = workspace;
    std::snprintf(info->refusals, sizeof info->refusals, "%s", refusals.c_str());
}

mla_status refuse(const char *op, const std::string &refusals) {
    std::string lines = refusals;
    while (!lines.empty() && lines.back() == '\n') lines.pop_back();
    for (char &c : lines)
        if (c == '\n') c = ';';
    return fail(MLA_ERR_UNSUPPORTED, "%s: no GPU implementation accepts this call (%s)", op,
                lines.c_str());
}

}  // namespace cuda
}  // namespace mla
