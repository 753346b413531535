// Plans of the GPU op families (docs/gpu-kernels.md, "Plans"): a call is planned once per
// shape and device, not on every call. A family lists its implementations in order of
// preference; each one accepts a call (and fills the family's plan: split, tiles, workspace)
// or says why not. The first that accepts wins, unless exec.implementation names one. Plans
// are cached per key (the sizes, dtypes, layouts, flags and pointer alignments the choice
// depends on; never data), device properties per device.
#pragma once
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include "mla/mla.h"

namespace mla {
namespace cuda {

// What the plans read of a device, once.
struct DeviceProps {
    int device = -1;
    int major = 0, minor = 0;
    int sms = 0;
    int smem_optin = 0;  // bytes of shared memory a block may opt in to
};

// Properties of `device` (read from the driver on first use, then cached).
mla_status device_props(int device, DeviceProps *out, const char *op);

// The key of a plan: a short list of integers.
struct PlanKey {
    static constexpr int kMax = 64;
    int64_t v[kMax];
    int n = 0;
    void add(int64_t x) {
        if (n < kMax) v[n++] = x;
    }
    void add(const char *s) {  // a name (the forced implementation), by its characters
        int64_t h = 1469598103934665603LL;
        for (; s && *s; ++s) h = (h ^ *s) * 1099511628211LL;
        add(h);
    }
    bool operator==(const PlanKey &o) const {
        return n == o.n && std::memcmp(v, o.v, sizeof(int64_t) * size_t(n)) == 0;
    }
};

struct PlanKeyHash {
    size_t operator()(const PlanKey &k) const {
        uint64_t h = 1469598103934665603ULL;
        for (int i = 0; i < k.n; ++i) h = (h ^ uint64_t(k.v[i])) * 1099511628211ULL;
        return size_t(h);
    }
};

// One implementation of a family. `accept` fills `plan` and returns true, or returns false
// with the reason in `why` (one line, no trailing period).
template <typename Call, typename Plan>
struct Implementation {
    const char *name;
    bool (*accept)(const Call &call, const DeviceProps &dev, Plan *plan, std::string *why);
};

// What planning decided: the plan (family-specific), the chosen implementation's index (-1:
// none), and the refusals of the others tried ("name: reason" lines).
template <typename Plan>
struct Planned {
    Plan plan{};
    int impl = -1;
    std::string refusals;
};

// Tries `impls` in order (only the one named `forced` when it is set and not empty).
template <typename Call, typename Plan, size_t N>
Planned<Plan> choose(const Implementation<Call, Plan> (&impls)[N], const Call &call,
                     const DeviceProps &dev, const char *forced) {
    Planned<Plan> out;
    bool known = !forced || !*forced;
    for (size_t i = 0; i < N; ++i) {
        if (forced && *forced && std::strcmp(forced, impls[i].name) != 0) continue;
        known = true;
        std::string why;
        Plan plan{};
        if (impls[i].accept(call, dev, &plan, &why)) {
            out.plan = plan;
            out.impl = int(i);
            return out;
        }
        out.refusals += std::string(impls[i].name) + ": " + why + "\n";
    }
    if (!known) {
        out.refusals = std::string("exec.implementation \"") + forced + "\" is not one of:";
        for (size_t i = 0; i < N; ++i) out.refusals += std::string(" ") + impls[i].name;
        out.refusals += "\n";
    }
    return out;
}

// A thread-safe cache of plans by key.
template <typename Plan>
class PlanCache {
public:
    bool find(const PlanKey &key, Planned<Plan> *out) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = map_.find(key);
        if (it == map_.end()) return false;
        *out = it->second;
        return true;
    }
    void put(const PlanKey &key, const Planned<Plan> &p) {
        std::lock_guard<std::mutex> lock(mu_);
        if (map_.size() > 4096) map_.clear();  // shapes that come and go: start over
        map_.emplace(key, p);
    }

private:
    std::mutex mu_;
    std::unordered_map<PlanKey, Planned<Plan>, PlanKeyHash> map_;
};

// Fills the C ABI's plan report.
void fill_plan_info(mla_plan_info *info, const char *impl, int64_t workspace,
                    const std::string &refusals);

// The status of a call no implementation accepts: MLA_ERR_UNSUPPORTED with the refusals.
mla_status refuse(const char *op, const std::string &refusals);

inline bool aligned16(const void *ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }
inline int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

}  // namespace cuda
}  // namespace mla
