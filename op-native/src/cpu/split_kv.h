// Runs the units of an attention op on the worker pool. A unit is a set of query rows with one
// key list (a request and KV head in decode, a query and KV head in sparse prefill, a block of
// queries and a KV head in dense attention). When there are fewer units than about twice the
// workers (decode of one request with one KV head, say), each unit's key list is cut into
// splits that run in parallel; their softmax states are merged afterwards, which gives the same
// result up to rounding. Memory: per worker one unit's scratch; with splits, one softmax state
// per (unit, split), never anything of size queries x keys.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>
#include "common/parallel.h"
#include "cpu/attention_core.h"

namespace mla {
namespace cpu {

// A split gets at least this many keys: below it the merge costs more than the parallelism
// gains.
constexpr int64_t kMinSplitKeys = 256;

struct UnitShape {
    int64_t units = 0;        // independent units
    int64_t max_rows = 0;     // query rows of the largest unit
    int64_t d_qk = 0, d_v = 0;
    int64_t max_keys = 0;     // length of the longest key list
    bool separate_values = false;  // values are rows of their own (not the keys' first d_v dims)
};

// Number of key splits per unit for `threads` (0 = the library default).
inline int64_t plan_key_splits(int64_t units, int64_t max_keys, int threads) {
    int avail = plan_workers(int64_t(1) << 40, 1, threads);
    if (avail <= 1 || units >= 2 * int64_t(avail) || max_keys < 2 * kMinSplitKeys) return 1;
    int64_t want = (2 * int64_t(avail) + units - 1) / units;
    int64_t most = max_keys / kMinSplitKeys;
    return std::max<int64_t>(1, std::min(want, most));
}

// process(Scratch<A>&, unit, k0, k1, SoftmaxState<A>&): folds the keys [k0, k1) of the unit's
//   key list into the state (already reset, bound to rows_of(unit) rows). Entries past the end
//   of the unit's own list are the process' to ignore.
// emit(unit, row, m, l, acc): writes the final row (acc [d_v], modifiable in place).
// rows_of(unit): query rows of the unit.
// Every allocation happens here, before the parallel regions.
template <typename A, typename RowsOf, typename Process, typename Emit>
void run_units(const UnitShape &sh, int threads, RowsOf rows_of, Process process, Emit emit) {
    if (sh.units <= 0 || sh.max_rows <= 0) return;
    const int64_t max_keys = std::max<int64_t>(sh.max_keys, 0);
    int64_t splits = plan_key_splits(sh.units, max_keys, threads);
    int64_t chunk = max_keys;
    if (splits > 1) {
        chunk = (max_keys + splits - 1) / splits;
        chunk = (chunk + kKeyTile - 1) / kKeyTile * kKeyTile;
        splits = (max_keys + chunk - 1) / chunk;
    }
    const int64_t state_size = SoftmaxState<A>::size(sh.max_rows, sh.d_v);

    if (splits <= 1) {
        std::vector<Scratch<A>> ws(size_t(plan_workers(sh.units, 1, threads)));
        for (auto &w : ws) w.init(sh.max_rows, sh.d_qk, sh.d_v, sh.separate_values, true);
        parallel_for(sh.units, 1, threads, [&](int64_t begin, int64_t end, int worker) {
            Scratch<A> &w = ws[size_t(worker)];
            for (int64_t u = begin; u < end; ++u) {
                SoftmaxState<A> st;
                st.bind(w.state.data(), rows_of(u), sh.d_v);
                st.reset();
                process(w, u, int64_t(0), max_keys, st);
                for (int64_t r = 0; r < st.rows; ++r)
                    emit(u, r, st.m[r], st.l[r], st.acc + r * sh.d_v);
            }
        });
        return;
    }

    const int64_t tasks = sh.units * splits;
    std::vector<A> partial(size_t(tasks * state_size));
    std::vector<Scratch<A>> ws(size_t(plan_workers(tasks, 1, threads)));
    for (auto &w : ws) w.init(sh.max_rows, sh.d_qk, sh.d_v, sh.separate_values, false);
    parallel_for(tasks, 1, threads, [&](int64_t begin, int64_t end, int worker) {
        Scratch<A> &w = ws[size_t(worker)];
        for (int64_t t = begin; t < end; ++t) {
            int64_t u = t / splits, sp = t % splits;
            SoftmaxState<A> st;
            st.bind(partial.data() + t * state_size, rows_of(u), sh.d_v);
            st.reset();
            process(w, u, sp * chunk, std::min(max_keys, (sp + 1) * chunk), st);
        }
    });
    parallel_for(sh.units, 1, threads, [&](int64_t begin, int64_t end, int) {
        for (int64_t u = begin; u < end; ++u) {
            int64_t rows = rows_of(u);
            SoftmaxState<A> st;
            st.bind(partial.data() + u * splits * state_size, rows, sh.d_v);
            for (int64_t sp = 1; sp < splits; ++sp) {
                SoftmaxState<A> other;
                other.bind(partial.data() + (u * splits + sp) * state_size, rows, sh.d_v);
                for (int64_t r = 0; r < rows; ++r)
                    merge_row(st.m[r], st.l[r], st.acc + r * sh.d_v, other.m[r], other.l[r],
                              other.acc + r * sh.d_v, sh.d_v);
            }
            for (int64_t r = 0; r < rows; ++r) emit(u, r, st.m[r], st.l[r], st.acc + r * sh.d_v);
        }
    });
}

}  // namespace cpu
}  // namespace mla
