// Native tests of the library under concurrent callers: many threads calling the entry points
// at once get the bits of a single-threaded call, and each thread keeps its own error message.
// (The worker pool itself is tested in test/pool.)
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include "mla/mla.h"
#include "test_support.h"

namespace {

using mla_test::check;
using mla_test::g_failed;
using mla_test::g_passed;

constexpr int kThreads = 8;
constexpr int kRepeats = 60;

mla_exec cpu() {
    mla_exec e{};
    e.device = -1;
    return e;
}

std::vector<float> normal(size_t n, uint64_t seed) {
    std::mt19937_64 g(seed);
    std::normal_distribution<float> d(0.f, 1.f);
    std::vector<float> v(n);
    for (auto &x : v) x = d(g);
    return v;
}

// Causal attention, b 2, s 64, 4 query heads on 2 KV heads: several work units, so the call
// runs on the worker pool.
struct AttentionCase {
    static constexpr int64_t B = 2, S = 64, HQ = 4, HKV = 2, DQK = 32, DV = 16;
    std::vector<float> q = normal(B * S * HQ * DQK, 1), k = normal(B * S * HKV * DQK, 2),
                       v = normal(B * S * HKV * DV, 3);

    mla_status run(std::vector<float> &out, std::vector<float> &lse) const {
        out.assign(B * S * HQ * DV, NAN);
        lse.assign(B * HQ * S, NAN);
        mla_attention_params p{};
        p.dtype = MLA_FLOAT32;
        p.b = B;
        p.s_q = S;
        p.s_k = S;
        p.h_q = HQ;
        p.h_kv = HKV;
        p.d_qk = DQK;
        p.d_v = DV;
        p.q = q.data();
        p.k = k.data();
        p.v = v.data();
        const int64_t qs[3] = {S * HQ * DQK, HQ * DQK, DQK}, ks[3] = {S * HKV * DQK, HKV * DQK, DQK},
                      vs[3] = {S * HKV * DV, HKV * DV, DV}, os[3] = {S * HQ * DV, HQ * DV, DV};
        std::memcpy(p.q_stride, qs, sizeof qs);
        std::memcpy(p.k_stride, ks, sizeof ks);
        std::memcpy(p.v_stride, vs, sizeof vs);
        std::memcpy(p.out_stride, os, sizeof os);
        p.softmax_scale = float(1.0 / std::sqrt(double(DQK)));
        p.causal = 1;
        p.out = out.data();
        p.lse = lse.data();
        p.exec = cpu();
        return mla_attention_fwd(&p);
    }
};

// Many threads run the same call at once; every result must equal the single-threaded one in
// every bit (the work split depends on shapes and pool size only).
void concurrent_calls_give_single_threaded_bits() {
    const AttentionCase c;
    std::vector<float> ref_out, ref_lse;
    check(c.run(ref_out, ref_lse) == MLA_OK, "single-threaded attention: %s", mla_last_error());
    std::atomic<int> mismatches{0}, errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            std::vector<float> out, lse;
            for (int i = 0; i < kRepeats; ++i) {
                if (c.run(out, lse) != MLA_OK) {
                    ++errors;
                    continue;
                }
                if (std::memcmp(out.data(), ref_out.data(), out.size() * sizeof(float)) != 0 ||
                    std::memcmp(lse.data(), ref_lse.data(), lse.size() * sizeof(float)) != 0)
                    ++mismatches;
            }
        });
    }
    for (auto &t : threads) t.join();
    check(errors == 0, "concurrent attention calls: %d failed", errors.load());
    check(mismatches == 0, "concurrent attention calls: %d of %d results differ from the single-threaded bits",
          mismatches.load(), kThreads * kRepeats);
}

// mla_topk with k = -(1000 + thread) fails with a message naming that k; between a thread's
// call and its reading of the message, other threads fail with their own values and succeed.
void error_messages_are_per_thread() {
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::vector<float> scores = normal(4 * 50, 10 + t);
            std::vector<int32_t> idx(4 * 5);
            std::vector<float> val(4 * 5);
            const std::string mine = "got " + std::to_string(-(1000 + t));
            for (int i = 0; i < 4 * kRepeats; ++i) {
                mla_topk_params p{};
                p.rows = 4;
                p.n = 50;
                p.scores = scores.data();
                p.indices = idx.data();
                p.values = val.data();
                p.exec = cpu();
                p.k = (i % 2 == 0) ? -(1000 + t) : 5;
                mla_status st = mla_topk(&p);
                std::this_thread::yield();
                if (p.k < 0) {
                    if (st != MLA_ERR_INVALID_ARGUMENT || std::strstr(mla_last_error(), mine.c_str()) == nullptr)
                        ++wrong;
                } else if (st != MLA_OK) {
                    ++wrong;
                }
            }
        });
    }
    for (auto &t : threads) t.join();
    check(wrong == 0, "per-thread error messages: %d calls saw a wrong status or another thread's message",
          wrong.load());
}

}  // namespace

int main() {
    concurrent_calls_give_single_threaded_bits();
    error_messages_are_per_thread();
    std::printf("test_concurrency: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
