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

private:
    mla_rope r_;
    std::vector<double> freqs_;
};

// Rotates the rope dims of row[0..d) in place by R(sign * position); sign = +1 or -1.
template <typename T>
void rotate_row(const RopeAngles &a, int64_t d, int64_t position, int sign, T *row) {
    const mla_rope &r = a.desc();
    int64_t start = rope_start(r, d);
    int64_t half = r.rope_dim / 2;
    for (int64_t i = 0; i < half; ++i) {
        double c, s;
        a.cos_sin(position, i, &c, &s);
        s *= sign;
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

}  // namespace mla
