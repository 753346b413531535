#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mla {
namespace {

thread_local bool in_worker = false;

// One job at a time runs on the pool; concurrent callers queue on job_mutex (any number of
// threads may call in). A call from inside a job (in_worker) runs serially on its thread.
class Pool {
public:
    explicit Pool(int n) {
        for (int i = 0; i < n; ++i) threads_.emplace_back([this, i] { loop(i + 1); });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> g(m_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto &t : threads_) t.join();
    }
    int size() const { return int(threads_.size()) + 1; }

    // Runs task(worker) on workers 0..count-1; worker 0 is the caller. A worker that has not
    // picked the task up by the time the caller's own part is done is not waited for: the
    // task (dynamic chunks) is finished by then, and on a busy machine a sleeping worker can
    // take a scheduler time slice to wake up. An exception thrown by the task on any worker
    // that ran it is rethrown here (the first one) once every such worker has finished: the
    // task lives on the caller's stack, so the caller must not leave before them.
    void run(int count, const std::function<void(int)> &task) {
        std::lock_guard<std::mutex> job(job_mutex_);
        {
            std::lock_guard<std::mutex> g(m_);
            task_ = &task;
            active_ = count - 1;
            pending_ = count - 1;
            started_ = 0;
            open_ = true;
            error_ = nullptr;
            ++generation_;
        }
        cv_.notify_all();
        std::exception_ptr own;
        in_worker = true;
        try {
            task(0);
        } catch (...) {
            own = std::current_exception();
        }
        in_worker = false;
        std::unique_lock<std::mutex> g(m_);
        open_ = false;                   // late workers skip this job
        pending_ -= active_ - started_;  // and are not waited for
        done_cv_.wait(g, [this] { return pending_ == 0; });
        task_ = nullptr;
        std::exception_ptr error = own ? own : error_;
        error_ = nullptr;
        g.unlock();
        if (error) std::rethrow_exception(error);
    }

private:
    void loop(int id) {
        in_worker = true;
        uint64_t seen = 0;
        for (;;) {
            const std::function<void(int)> *task;
            {
                std::unique_lock<std::mutex> g(m_);
                cv_.wait(g, [&] {
                    return stop_ || (generation_ != seen && open_ && id <= active_);
                });
                if (stop_) return;
                seen = generation_;
                task = task_;
                ++started_;
            }
            std::exception_ptr error;
            try {
                (*task)(id);
            } catch (...) {
                error = std::current_exception();  // escaping a std::thread would terminate the process
            }
            std::lock_guard<std::mutex> g(m_);
            if (error && !error_) error_ = error;
            if (--pending_ == 0) done_cv_.notify_one();
        }
    }

    std::vector<std::thread> threads_;
    std::mutex m_, job_mutex_;
    std::condition_variable cv_, done_cv_;
    const std::function<void(int)> *task_ = nullptr;
    std::exception_ptr error_;  // the first exception a worker's task threw in this job
    int active_ = 0, pending_ = 0, started_ = 0;
    bool open_ = false;
    uint64_t generation_ = 0;
    bool stop_ = false;
};

Pool &pool() {
    static Pool p(std::max(0, default_num_threads() - 1));
    return p;
}

}  // namespace

int default_num_threads() {
    static int n = [] {
        const char *env = std::getenv("MLA4J_NUM_THREADS");
        if (env && std::atoi(env) > 0) return std::atoi(env);
        unsigned hc = std::thread::hardware_concurrency();
        return hc ? int(hc) : 1;
    }();
    return n;
}

int plan_workers(int64_t n, int64_t grain, int threads) {
    if (n <= 0) return 1;
    int t = threads > 0 ? std::min(threads, pool().size()) : pool().size();
    int64_t chunks = (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1);
    if (in_worker) return 1;
    return int(std::max<int64_t>(1, std::min<int64_t>(t, chunks)));
}

void parallel_for(int64_t n, int64_t grain, int threads,
                  const std::function<void(int64_t, int64_t, int)> &body) {
    if (n <= 0) return;
    int workers = plan_workers(n, grain, threads);
    if (workers <= 1) {
        body(0, n, 0);
        return;
    }
    // Dynamic chunks: about 4 per worker, at least `grain` items each.
    int64_t chunk = std::max<int64_t>(std::max<int64_t>(grain, 1), n / (int64_t(workers) * 4));
    std::atomic<int64_t> next{0};
    pool().run(workers, [&](int worker) {
        for (;;) {
            int64_t begin = next.fetch_add(chunk);
            if (begin >= n) break;
            body(begin, std::min(n, begin + chunk), worker);
        }
    });
}

}  // namespace mla
