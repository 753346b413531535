// Tests of the CPU worker pool (src/common/parallel.cpp), compiled into this executable:
// concurrent callers each get their whole job, and a body that throws on any worker reaches
// the caller without ending the process or wedging the pool. The pool is built here from its
// source because an exception must not cross from this executable's C++ runtime into the
// library's static one.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>
#include <vector>
#include "common/parallel.h"
#include "test_support.h"

namespace {

using mla_test::check;
using mla_test::g_failed;
using mla_test::g_passed;

constexpr int kThreads = 8;
constexpr int kRepeats = 60;

// Concurrent callers of the pool each get their own complete job.
void pool_serves_concurrent_callers() {
    constexpr int64_t n = 100000;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kRepeats; ++i) {
                std::vector<int64_t> partial(size_t(mla::plan_workers(n, 64, 0)), 0);
                mla::parallel_for(n, 64, 0, [&](int64_t b, int64_t e, int w) {
                    for (int64_t x = b; x < e; ++x) partial[size_t(w)] += x * (t + 1);
                });
                int64_t sum = 0;
                for (int64_t s : partial) sum += s;
                if (sum != (t + 1) * (n * (n - 1) / 2)) ++wrong;
            }
        });
    }
    for (auto &t : threads) t.join();
    check(wrong == 0, "concurrent parallel_for: %d sums wrong", wrong.load());
}

// A body that throws (std::bad_alloc in a kernel, say) on a pool worker or on the calling
// thread: the exception reaches the caller, and the pool keeps working afterwards with the
// caller's thread able to use it again.
void pool_survives_a_throwing_body() {
    const int workers = mla::plan_workers(1 << 20, 1, 0);
    for (int round = 0; round < 40; ++round)
    for (int thrower = 0; thrower < std::min(workers, 2); ++thrower) {
        // The pool does not promise a chunk to every worker (one may take them all), so the
        // throw must reach the caller exactly when the throwing worker ran a chunk.
        std::atomic<bool> ran{false};
        bool caught = false;
        try {
            mla::parallel_for(int64_t(workers) * 64, 1, 0, [&](int64_t, int64_t, int w) {
                if (w != thrower) return;
                ran = true;
                throw std::runtime_error("body failed");
            });
        } catch (const std::runtime_error &e) {
            caught = std::strcmp(e.what(), "body failed") == 0;
        }
        check(caught == ran.load(), "a throw on worker %d reaches the caller (ran %d, caught %d)", thrower,
              int(ran.load()), int(caught));
        std::atomic<int64_t> sum{0};
        mla::parallel_for(10000, 16, 0, [&](int64_t b, int64_t e, int) {
            int64_t s = 0;
            for (int64_t x = b; x < e; ++x) s += x;
            sum += s;
        });
        check(sum == int64_t(10000) * 9999 / 2, "the pool works after a throwing body (thrower %d)", thrower);
        check(mla::plan_workers(1 << 20, 1, 0) == workers,
              "the calling thread may use the pool again after a throw (%d workers, was %d)",
              mla::plan_workers(1 << 20, 1, 0), workers);
    }
    // Every chunk throws: whichever arrives, exactly one exception reaches the caller.
    int caught = 0;
    try {
        mla::parallel_for(int64_t(workers) * 64, 1, 0, [](int64_t, int64_t, int) { throw std::bad_alloc(); });
    } catch (const std::bad_alloc &) {
        ++caught;
    }
    check(caught == 1, "a throw on every worker reaches the caller once");
}

}  // namespace

int main() {
    pool_serves_concurrent_callers();
    pool_survives_a_throwing_body();
    std::printf("test_parallel_pool: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
