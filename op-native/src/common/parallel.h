// A small persistent worker pool for the CPU kernels.
#pragma once
#include <cstdint>
#include <functional>

namespace mla {

// Threads the library uses when a call asks for 0: MLA4J_NUM_THREADS if set, else the
// hardware concurrency.
int default_num_threads();

// Runs body(begin, end, worker) over [0, n) split into chunks of at least `grain` items, on up
// to `threads` workers (0 = default). worker is in [0, workers_used) and indexes per-thread
// scratch. Calls from inside a worker run serially. Any number of threads may call at once:
// one call at a time uses the pool, the others wait for it. An exception thrown by body (on
// any worker) is rethrown to the caller after every worker has stopped. Size per-worker
// scratch before the call with plan_workers.
void parallel_for(int64_t n, int64_t grain, int threads,
                  const std::function<void(int64_t, int64_t, int)> &body);

// The number of distinct `worker` values parallel_for(n, grain, threads, ...) may pass.
int plan_workers(int64_t n, int64_t grain, int threads);

}  // namespace mla
