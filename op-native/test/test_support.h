// Pass / fail bookkeeping shared by the native tests: every check counts, every failure prints
// one "FAIL: ..." line, and a test ends with "N passed, M failed" and a non-zero exit on failure.
#pragma once
#include <cstdarg>
#include <cstdio>

namespace mla_test {

inline int g_passed = 0, g_failed = 0;

// Exit status of a test that ran no case (e.g. a GPU test without a CUDA device); CMakeLists.txt
// gives it to ctest as SKIP_RETURN_CODE so such a test is reported as skipped, not passed.
constexpr int kSkipped = 77;

inline void check(bool ok, const char *fmt, ...) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    va_list ap;
    va_start(ap, fmt);
    std::printf("FAIL: ");
    std::vprintf(fmt, ap);
    std::printf("\n");
    va_end(ap);
}

}  // namespace mla_test
