// Per-thread error message and the argument-check helpers every entry point uses.
#pragma once
#include <cstdarg>
#include <cstdint>
#include <string>
#include "mla/mla.h"

namespace mla {

// Records a message for mla_last_error() and returns `status`. printf-style.
mla_status fail(mla_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void clear_error();

}  // namespace mla

// Inside a function returning mla_status: fail with INVALID_ARGUMENT unless `cond` holds.
// The message names the op, the argument, what was expected and what arrived.
#define MLA_REQUIRE(cond, ...)                                          \
    do {                                                                \
        if (!(cond)) return ::mla::fail(MLA_ERR_INVALID_ARGUMENT, __VA_ARGS__); \
    } while (0)

// Propagates a non-OK status.
#define MLA_TRY(expr)                        \
    do {                                     \
        mla_status _s = (expr);              \
        if (_s != MLA_OK) return _s;         \
    } while (0)
