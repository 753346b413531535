// Library-wide queries of the C ABI.
#include "mla/mla.h"

#ifdef MLA4J_WITH_CUDA
namespace mla { namespace cuda { int32_t device_count(); } }
#endif

extern "C" int32_t mla_abi_version(void) { return MLA_ABI_VERSION; }

extern "C" const char *mla_build_targets(void) { return MLA4J_TARGETS; }

extern "C" int32_t mla_cuda_device_count(void) {
#ifdef MLA4J_WITH_CUDA
    return mla::cuda::device_count();
#else
    return 0;
#endif
}
