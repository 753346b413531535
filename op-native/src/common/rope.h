// RoPE frequencies (with YaRN) and the rotation of one row, shared by the rope op and the
// VVPA output rotation of the attention ops.
#pragma once
#include <cstdint>
#include <vector>
#include "mla/mla.h"

namespace mla {

// Checks a rope descriptor for a row of d dims; `op` and `arg` name it in messages.
mla_status check_rope(const mla_rope &r, int64_t d, const char *op, const char *arg);

// The first rotated dim of a row of d dims.
inline int64_t rope_start(const mla_rope &r, int64_t d) {
    return r.rope_offset < 0 ? d - r.rope_dim : r.rope_offset;
}

// Precomputed angular frequencies of a descriptor.
class RopeAngles {
public:
    explicit RopeAngles(const mla_rope &r);
    // cos and sin of pair i at `position` (table lookup or computed in double).
    void cos_sin(int64_t position, int64_t i, double *c, double *s) const;
    const mla_rope &desc() const { return r_; }
    double freq(int64_t i) const { return freqs_[i]; }
    // cos and sin of every pair at `position`: rope_dim / 2 values each.
    void fill(int64_t position, double *cs, double *sn) const {
        for (int64_t i = 0; i < r_.rope_dim / 2; ++i) cos_sin(position, i, &cs[i], &sn[i]);
    }

private:
    mla_rope r_;
    std::vector<double> freqs_;
};

// Rotates the rope dims of row[0..d) by precomputed angles: cs[i], sn[i] are the cos and sin
// of pair i (see RopeAngles::fill); sign = +1 or -1 turns forward or back.
template <typename T>
void rotate_row_cs(const mla_rope &r, int64_t d, const double *cs, const double *sn, int sign, T *row) {
    int64_t start = rope_start(r, d);
    int64_t half = r.rope_dim / 2;
    for (int64_t i = 0; i < half; ++i) {
        double c = cs[i], s = sign * sn[i];
        int64_t i0, i1;
        if (r.style == MLA_ROPE_INTERLEAVED) {
            i0 = start + 2 * i;
            i1 = i0 + 1;
        } else {
            i0 = start + i;
            i1 = start + i + half;
        }
        T x0 = row[i0], x1 = row[i1];
        row[i0] = T(x0 * c - x1 * s);
        row[i1] = T(x0 * s + x1 * c);
    }
}

// Rotates the rope dims of row[0..d) in place by R(sign * position); sign = +1 or -1.
template <typename T>
void rotate_row(const RopeAngles &a, int64_t d, int64_t position, int sign, T *row) {
    double cs[512], sn[512];  // rope_dim <= 1024 (checked by check_rope)
    a.fill(position, cs, sn);
    rotate_row_cs(a.desc(), d, cs, sn, sign, row);
}

}  // namespace mla
