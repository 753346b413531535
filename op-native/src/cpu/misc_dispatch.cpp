// The CPU dispatch shared by the entry points of the cache, indexer, top-k and RoPE ops.
#include <exception>
#include <new>
#include "common/error.h"
#include "cpu/misc_kernels.h"

namespace mla {
namespace cpu {

mla_status run_on_cpu(const mla_exec &exec, const char *op, const std::function<void()> &kernel) {
    MLA_REQUIRE(exec.num_threads >= 0, "%s: exec.num_threads must be >= 0, got %d", op,
                exec.num_threads);
    if (exec.device >= 0)
        return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: no GPU implementation in this build",
                    op, exec.device);
    try {
        kernel();
    } catch (const std::bad_alloc &) {
        return fail(MLA_ERR_OUT_OF_MEMORY, "%s: out of host memory for scratch buffers", op);
    } catch (const std::exception &e) {
        return fail(MLA_ERR_INTERNAL, "%s: %s", op, e.what());
    }
    return MLA_OK;
}

}  // namespace cpu
}  // namespace mla
