#include "common/error.h"

#include <cstdio>

namespace mla {
namespace {
thread_local std::string last_error;
}

mla_status fail(mla_status status, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    last_error = buf;
    return status;
}

void clear_error() { last_error.clear(); }

const char *last_error_message() { return last_error.c_str(); }

}  // namespace mla

extern "C" const char *mla_last_error(void) { return mla::last_error_message(); }
