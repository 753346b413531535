// CPU backward kernels of the attention ops (ops.md sections 3 and 4). They assume the
// arguments were validated by the entry points in src/api/backward.cpp, run on the calling
// thread plus the worker pool (exec.num_threads), and write every element of every output.
// Memory is O(sequence): probabilities are recomputed from q, k and the forward's lse, never
// stored. Results are deterministic: every output element is reduced in a fixed order,
// whatever the number of threads.
//
// Gradient of one query row i (head h), with S_ij = scale * q_i.k_j and the sink as an extra
// logit whose value vector is zero:
//   lse'_i = log(exp(lse_i) + exp(sink_h)),  P_ij = exp(S_ij - lse'_i),  D_i = dout_i.out_i
//   dS_ij = P_ij (dout_i.v_j - D_i);  dq_i = scale sum_j dS_ij k_j;  dk_j = scale sum_i dS_ij q_i
//   dv_j = sum_i P_ij dout_i;  dsink_h = -sum_i exp(sink_h - lse'_i) D_i
// A row with lse'_i = +inf (no visible key, or a +inf sink) contributes nothing.
// VVPA: the forward rotated the output by R(-pos_i), so the attention sees R(+pos_i) dout_i;
// D_i is a dot product of two rows rotated alike, so it is taken from the given out and dout.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>
#include "common/dtype.h"
#include "common/parallel.h"
#include "common/rope.h"
#include "mla/mla.h"

namespace mla {
namespace cpu {

// Dense attention backward: dq, dk, dv (or dk alone when v aliases k), dsink.
// Throws std::bad_alloc when scratch memory cannot be had; that happens before any output is
// written.
void attention_backward(const mla_attention_params &p);

// Sparse prefill backward: dq, dkv (scatter-add of the key and value paths), dsink.
// Same allocation guarantee as attention_backward.
void sparse_prefill_backward(const mla_sparse_prefill_params &p);

// Helpers shared by the two backward kernels.
namespace bwd {

// The micro kernels use GCC / Clang vector extensions of VB bytes: 16 (SSE, the build's
// baseline, or NEON) everywhere and, on x86-64, 32 in copies compiled for AVX2 + FMA that are
// chosen at run time when the processor has them (MLA4J_DISABLE_AVX2=1 forces the baseline).
// Unaligned loads and stores go through memcpy.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLA_BWD_AVX2 1
#endif
#define MLA_BWD_INLINE inline __attribute__((always_inline))

#ifdef MLA_BWD_AVX2
inline bool use_avx2() {
    static const bool yes = [] {
        const char *off = std::getenv("MLA4J_DISABLE_AVX2");
        if (off && off[0] && off[0] != '0') return false;
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return yes;
}
#endif

// Vectors pass by reference: a 32-byte vector by value would change the calling convention
// between the baseline and the AVX2 code.
template <typename V, typename T>
MLA_BWD_INLINE void load_vec(V &v, const T *p) {
    __builtin_memcpy(&v, p, sizeof v);
}

template <typename V, typename T>
MLA_BWD_INLINE void store_vec(T *p, const V &v) {
    __builtin_memcpy(p, &v, sizeof v);
}

// out[j] = a . b[j] over k dims, for j in [j0, j1). Four rows of b at a time share each load
// of a; two vectors per row keep eight independent sums in flight.
template <typename T, int VB>
MLA_BWD_INLINE void row_dots_impl(const T *a, const T *const *b, int64_t j0, int64_t j1,
                                  int64_t k, T *out) {
    typedef T vec __attribute__((vector_size(VB)));
    constexpr int V = VB / sizeof(T);
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) {
        const T *rows[4] = {b[j], b[j + 1], b[j + 2], b[j + 3]};
        vec acc[4][2] = {};
        int64_t i = 0;
        for (; i + 2 * V <= k; i += 2 * V) {
            vec x0, x1, y0, y1;
            load_vec(x0, a + i);
            load_vec(x1, a + i + V);
            for (int c = 0; c < 4; ++c) {
                load_vec(y0, rows[c] + i);
                load_vec(y1, rows[c] + i + V);
                acc[c][0] += x0 * y0;
                acc[c][1] += x1 * y1;
            }
        }
        for (int c = 0; c < 4; ++c) {
            vec v = acc[c][0] + acc[c][1];
            T s = 0;
            for (int l = 0; l < V; ++l) s += v[l];
            for (int64_t t = i; t < k; ++t) s += a[t] * rows[c][t];
            out[j + c] = s;
        }
    }
    for (; j < j1; ++j) {
        const T *row = b[j];
        vec acc[2] = {};
        int64_t i = 0;
        for (; i + 2 * V <= k; i += 2 * V) {
            vec x0, x1, y0, y1;
            load_vec(x0, a + i);
            load_vec(x1, a + i + V);
            load_vec(y0, row + i);
            load_vec(y1, row + i + V);
            acc[0] += x0 * y0;
            acc[1] += x1 * y1;
        }
        vec v = acc[0] + acc[1];
        T s = 0;
        for (int l = 0; l < V; ++l) s += v[l];
        for (; i < k; ++i) s += a[i] * row[i];
        out[j] = s;
    }
}

// acc[c] += sum_j w[j] * b[j][c] for c < d and j in [j0, j1): a chunk of four vectors of acc
// stays in registers while the rows of b stream past.
template <typename T, int VB>
MLA_BWD_INLINE void row_accumulate_impl(T *acc, const T *w, const T *const *b, int64_t j0,
                                        int64_t j1, int64_t d) {
    typedef T vec __attribute__((vector_size(VB)));
    constexpr int V = VB / sizeof(T), U = 4;
    int64_t c = 0;
    for (; c + U * V <= d; c += U * V) {
        vec a[U], y;
        for (int u = 0; u < U; ++u) load_vec(a[u], acc + c + u * V);
        for (int64_t j = j0; j < j1; ++j) {
            const vec wj = vec{} + w[j];
            const T *row = b[j] + c;
            for (int u = 0; u < U; ++u) {
                load_vec(y, row + u * V);
                a[u] += wj * y;
            }
        }
        for (int u = 0; u < U; ++u) store_vec(acc + c + u * V, a[u]);
    }
    for (; c + V <= d; c += V) {
        vec a, y;
        load_vec(a, acc + c);
        for (int64_t j = j0; j < j1; ++j) {
            load_vec(y, b[j] + c);
            a += w[j] * y;
        }
        store_vec(acc + c, a);
    }
    for (; c < d; ++c) {
        T s = acc[c];
        for (int64_t j = j0; j < j1; ++j) s += w[j] * b[j][c];
        acc[c] = s;
    }
}

// Four rows at once: out[r][j] = a[r] . b[j] for r < 4, j in [j0, j1). Each load of a key
// feeds four rows (two keys at a time: eight independent sums).
template <typename T, int VB>
MLA_BWD_INLINE void rows4_dots_impl(const T *const *a, const T *const *b, int64_t j0,
                                    int64_t j1, int64_t k, T *const *out) {
    typedef T vec __attribute__((vector_size(VB)));
    constexpr int V = VB / sizeof(T);
    int64_t j = j0;
    for (; j < j1; j += 2) {
        const int nk = j + 1 < j1 ? 2 : 1;
        const T *keys[2] = {b[j], b[j + nk - 1]};
        vec acc[4][2] = {};
        int64_t i = 0;
        for (; i + V <= k; i += V) {
            vec y0, y1, x;
            load_vec(y0, keys[0] + i);
            load_vec(y1, keys[1] + i);
            for (int r = 0; r < 4; ++r) {
                load_vec(x, a[r] + i);
                acc[r][0] += x * y0;
                acc[r][1] += x * y1;
            }
        }
        for (int r = 0; r < 4; ++r)
            for (int c = 0; c < nk; ++c) {
                T s = 0;
                for (int l = 0; l < V; ++l) s += acc[r][c][l];
                for (int64_t t = i; t < k; ++t) s += a[r][t] * keys[c][t];
                out[r][j + c] = s;
            }
    }
}

// Four accumulator rows at once: acc[r][c] += sum_j w[r][j] * b[j][c] for r < 4, c < d,
// j in [j0, j1). Each load of a row of b feeds the four accumulators. The four rows take the
// same operations, so a row's result does not depend on its slot or on the other rows.
template <typename T, int VB>
MLA_BWD_INLINE void rows4_accumulate_impl(T *const *acc, const T *const *w, const T *const *b,
                                          int64_t j0, int64_t j1, int64_t d) {
    typedef T vec __attribute__((vector_size(VB)));
    constexpr int V = VB / sizeof(T), U = 2;
    int64_t c = 0;
    for (; c + U * V <= d; c += U * V) {
        vec a[4][U], y[U];
        for (int r = 0; r < 4; ++r)
            for (int u = 0; u < U; ++u) load_vec(a[r][u], acc[r] + c + u * V);
        for (int64_t j = j0; j < j1; ++j) {
            for (int u = 0; u < U; ++u) load_vec(y[u], b[j] + c + u * V);
            for (int r = 0; r < 4; ++r) {
                const vec wj = vec{} + w[r][j];
                for (int u = 0; u < U; ++u) a[r][u] += wj * y[u];
            }
        }
        for (int r = 0; r < 4; ++r)
            for (int u = 0; u < U; ++u) store_vec(acc[r] + c + u * V, a[r][u]);
    }
    for (; c + V <= d; c += V) {
        vec a[4], y;
        for (int r = 0; r < 4; ++r) load_vec(a[r], acc[r] + c);
        for (int64_t j = j0; j < j1; ++j) {
            load_vec(y, b[j] + c);
            for (int r = 0; r < 4; ++r) a[r] += w[r][j] * y;
        }
        for (int r = 0; r < 4; ++r) store_vec(acc[r] + c, a[r]);
    }
    for (; c < d; ++c)
        for (int r = 0; r < 4; ++r) {
            T s = acc[r][c];
            for (int64_t j = j0; j < j1; ++j) s += w[r][j] * b[j][c];
            acc[r][c] = s;
        }
}

#ifdef MLA_BWD_AVX2
template <typename T>
__attribute__((target("avx2,fma"))) void row_dots_avx2(const T *a, const T *const *b,
                                                       int64_t j0, int64_t j1, int64_t k, T *out) {
    row_dots_impl<T, 32>(a, b, j0, j1, k, out);
}

template <typename T>
__attribute__((target("avx2,fma"))) void rows4_dots_avx2(const T *const *a, const T *const *b,
                                                         int64_t j0, int64_t j1, int64_t k,
                                                         T *const *out) {
    rows4_dots_impl<T, 32>(a, b, j0, j1, k, out);
}

template <typename T>
__attribute__((target("avx2,fma"))) void rows4_accumulate_avx2(T *const *acc, const T *const *w,
                                                               const T *const *b, int64_t j0,
                                                               int64_t j1, int64_t d) {
    rows4_accumulate_impl<T, 32>(acc, w, b, j0, j1, d);
}

template <typename T>
__attribute__((target("avx2,fma"))) void row_accumulate_avx2(T *acc, const T *w,
                                                             const T *const *b, int64_t j0,
                                                             int64_t j1, int64_t d) {
    row_accumulate_impl<T, 32>(acc, w, b, j0, j1, d);
}
#endif

template <typename T>
inline void row_dots(const T *a, const T *const *b, int64_t j0, int64_t j1, int64_t k, T *out) {
#ifdef MLA_BWD_AVX2
    if (use_avx2()) return row_dots_avx2<T>(a, b, j0, j1, k, out);
#endif
    row_dots_impl<T, 16>(a, b, j0, j1, k, out);
}

template <typename T>
inline void row_accumulate(T *acc, const T *w, const T *const *b, int64_t j0, int64_t j1,
                           int64_t d) {
#ifdef MLA_BWD_AVX2
    if (use_avx2()) return row_accumulate_avx2<T>(acc, w, b, j0, j1, d);
#endif
    row_accumulate_impl<T, 16>(acc, w, b, j0, j1, d);
}

template <typename T>
inline void rows4_dots(const T *const *a, const T *const *b, int64_t j0, int64_t j1, int64_t k,
                       T *const *out) {
#ifdef MLA_BWD_AVX2
    if (use_avx2()) return rows4_dots_avx2<T>(a, b, j0, j1, k, out);
#endif
    rows4_dots_impl<T, 16>(a, b, j0, j1, k, out);
}

template <typename T>
inline void rows4_accumulate(T *const *acc, const T *const *w, const T *const *b, int64_t j0,
                             int64_t j1, int64_t d) {
#ifdef MLA_BWD_AVX2
    if (use_avx2()) return rows4_accumulate_avx2<T>(acc, w, b, j0, j1, d);
#endif
    rows4_accumulate_impl<T, 16>(acc, w, b, j0, j1, d);
}

// Row `offset` of a tensor as T: a pointer into the tensor when its type is T, else the row
// converted into `buf`.
template <typename T>
inline const T *row_ptr(const void *base, int32_t dtype, int64_t offset, int64_t n, T *buf) {
    if (dtype == (sizeof(T) == 8 ? MLA_FLOAT64 : MLA_FLOAT32))
        return static_cast<const T *>(base) + offset;
    load_row<T>(base, dtype, offset, n, buf);
    return buf;
}

// Dot product of two rows in double, for D_i.
template <typename T>
inline double dot_wide(const T *a, const T *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
    return s;
}

// The normaliser with the sink as an extra logit: log(exp(lse) + exp(sink)).
inline double add_sink(double lse, double sink) {
    double m = std::fmax(lse, sink);
    if (std::isinf(m)) return m;  // both -inf, or either +inf
    return m + std::log(std::exp(lse - m) + std::exp(sink - m));
}

inline bool dead_row(double lse_with_sink) {
    return lse_with_sink == std::numeric_limits<double>::infinity();
}

// Running log-sum-exp, for recomputing lse in double (float64 inputs).
struct OnlineLse {
    double max = -std::numeric_limits<double>::infinity();
    double sum = 0;
    void add(double x) {
        if (x > max) {
            sum = sum * std::exp(max - x) + 1.0;
            max = x;
        } else {
            sum += std::exp(x - max);
        }
    }
    // +inf when no key was added: the forward's convention for a row without keys.
    double value() const {
        return sum > 0 ? max + std::log(sum) : std::numeric_limits<double>::infinity();
    }
};

// cos / sin of the VVPA rotation R(+pos) of every query row, computed once so that the
// kernels can rotate a dout row many times cheaply.
class RowRotation {
public:
    // Inactive when rot.positions is NULL. d: dims of an output row.
    RowRotation(const mla_out_rotation &rot, int64_t rows, int64_t d, int threads) {
        if (!rot.positions || rows <= 0) return;
        const mla_rope &r = rot.rope;
        start_ = rope_start(r, d);
        half_ = r.rope_dim / 2;
        style_ = r.style;
        cos_.resize(size_t(rows * half_));
        sin_.resize(size_t(rows * half_));
        RopeAngles angles(r);
        parallel_for(rows, 256, threads, [&](int64_t begin, int64_t end, int) {
            for (int64_t row = begin; row < end; ++row)
                for (int64_t i = 0; i < half_; ++i)
                    angles.cos_sin(rot.positions[row], i, &cos_[row * half_ + i],
                                   &sin_[row * half_ + i]);
        });
    }

    bool active() const { return half_ > 0; }

    // x <- R(+pos_row) x on the rope dims (the same pairing as rotate_row).
    template <typename T>
    void apply(int64_t row, T *x) const {
        const double *c = &cos_[row * half_], *s = &sin_[row * half_];
        for (int64_t i = 0; i < half_; ++i) {
            int64_t i0, i1;
            if (style_ == MLA_ROPE_INTERLEAVED) {
                i0 = start_ + 2 * i;
                i1 = i0 + 1;
            } else {
                i0 = start_ + i;
                i1 = start_ + i + half_;
            }
            double x0 = x[i0], x1 = x[i1];
            x[i0] = T(x0 * c[i] - x1 * s[i]);
            x[i1] = T(x0 * s[i] + x1 * c[i]);
        }
    }

private:
    int64_t start_ = 0, half_ = 0;
    int32_t style_ = 0;
    std::vector<double> cos_, sin_;
};

// dsink_h = -sum over the rows of head h of exp(sink_h - lse'_i) D_i, summed in row order.
// stats are [rows, h_q]; no sink: zeros.
template <typename Acc>
void sink_gradient(const float *sink, float *dsink, int64_t rows, int64_t h_q,
                   const std::vector<Acc> &D, const std::vector<Acc> &lse) {
    if (!dsink) return;
    for (int64_t h = 0; h < h_q; ++h) {
        double g = 0;
        if (sink) {
            for (int64_t r = 0; r < rows; ++r) {
                double l = lse[size_t(r * h_q + h)];
                if (dead_row(l)) continue;
                g += std::exp(double(sink[h]) - l) * double(D[size_t(r * h_q + h)]);
            }
        }
        dsink[h] = float(-g);
    }
}

}  // namespace bwd
}  // namespace cpu
}  // namespace mla
