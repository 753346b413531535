// Entry points of the embedding lookup (ops.md section 9): argument checks, then the CPU
// kernels.
#include <cstdint>
#include "common/dtype.h"
#include "common/error.h"
#include "cpu/misc_kernels.h"

namespace {

using mla::fail;

// What the forward and backward share: dtype, sizes, the ids (every one in [0, vocab)).
mla_status check_common(const mla_embedding_params &p, const char *op) {
    MLA_REQUIRE(mla::is_float_dtype(p.dtype),
                "%s: dtype must be float32, float64, float16 or bfloat16, got %s", op,
                mla::dtype_name(p.dtype));
    MLA_REQUIRE(p.n >= 0, "%s: n must be >= 0, got %lld", op, (long long)p.n);
    MLA_REQUIRE(p.vocab >= 1, "%s: vocab must be >= 1, got %lld", op, (long long)p.vocab);
    MLA_REQUIRE(p.dim >= 1, "%s: dim must be >= 1, got %lld", op, (long long)p.dim);
    MLA_REQUIRE(p.indices != nullptr || p.n == 0, "%s: indices must not be null", op);
    for (int64_t i = 0; i < p.n; ++i)
        MLA_REQUIRE(p.indices[i] >= 0 && p.indices[i] < p.vocab,
                    "%s: indices[%lld] must be a token id in [0, vocab %lld), got %d", op,
                    (long long)i, (long long)p.vocab, p.indices[i]);
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_embedding_fwd(const mla_embedding_params *p) {
    const char *op = "mla_embedding_fwd";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(check_common(*p, op));
    MLA_REQUIRE(p->table_stride >= p->dim, "%s: table_stride must be >= dim (%lld), got %lld", op,
                (long long)p->dim, (long long)p->table_stride);
    MLA_REQUIRE(p->table != nullptr, "%s: table must not be null", op);
    MLA_REQUIRE(p->out != nullptr || p->n == 0, "%s: out must not be null", op);
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::embedding_fwd(*p); });
}

extern "C" mla_status mla_embedding_bwd(const mla_embedding_params *p) {
    const char *op = "mla_embedding_bwd";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_TRY(check_common(*p, op));
    MLA_REQUIRE(p->dout != nullptr || p->n == 0, "%s: dout must not be null", op);
    MLA_REQUIRE(p->dtable != nullptr, "%s: dtable must not be null", op);
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::embedding_bwd(*p); });
}
