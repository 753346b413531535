package org.mla4j.tests.reference;

import org.mla4j.ops.RopeConfig;

/**
 * Rotary position embedding after DeepSeek's {@code precompute_freqs_cis} (V3 inference code):
 * pair i of the rotated dims turns by {@code position * f_i}, {@code f_i = theta^(-2i/dim)};
 * with YaRN (factor > 1) the pairs between the correction dims of beta_fast and beta_slow are
 * blended between {@code f_i} and {@code f_i / factor} by a linear ramp, slower pairs divided by
 * the factor. Interleaved pairs are (2i, 2i+1); half-split pairs (i, i + dim/2).
 */
public final class RopeRef {
    private RopeRef() {}

    /** DeepSeek's find_correction_dim: the dim whose wavelength fits numRotations in maxPos. */
    static double correctionDim(double numRotations, int dim, double base, double maxPos) {
        return dim * Math.log(maxPos / (numRotations * 2 * Math.PI)) / (2 * Math.log(base));
    }

    /** Angular frequency of each pair (dim / 2 of them). */
    public static double[] frequencies(RopeConfig c) {
        int dim = c.ropeDim;
        double[] f = new double[dim / 2];
        for (int i = 0; i < dim / 2; i++) f[i] = 1.0 / Math.pow(c.theta, (2.0 * i) / dim);
        if (c.yarnFactor > 1) {
            double low = Math.max(Math.floor(correctionDim(c.betaFast, dim, c.theta, c.originalMaxPosition)), 0);
            double high = Math.min(Math.ceil(correctionDim(c.betaSlow, dim, c.theta, c.originalMaxPosition)), dim - 1);
            if (low == high) high += 0.001;
            for (int i = 0; i < dim / 2; i++) {
                double ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
                double smooth = 1 - ramp;
                f[i] = f[i] / c.yarnFactor * (1 - smooth) + f[i] * smooth;
            }
        }
        return f;
    }

    /**
     * Rotates, in place, the rope dims of the row of d values starting at {@code at} in
     * {@code x} by R(position) (R(-position) when inverse).
     */
    public static void rotate(double[] x, int at, int d, long position, boolean inverse, RopeConfig c, double[] freqs) {
        int start = c.offset < 0 ? d - c.ropeDim : c.offset;
        int half = c.ropeDim / 2;
        for (int i = 0; i < half; i++) {
            double angle = position * freqs[i] * (inverse ? -1 : 1);
            int a = c.style == RopeConfig.INTERLEAVED ? start + 2 * i : start + i;
            int b = c.style == RopeConfig.INTERLEAVED ? a + 1 : start + i + half;
            double re = x[at + a], im = x[at + b];
            // (re + i im) * e^{i angle}
            x[at + a] = re * Math.cos(angle) - im * Math.sin(angle);
            x[at + b] = re * Math.sin(angle) + im * Math.cos(angle);
        }
    }

    /**
     * The rope op on x [tokens, heads, d] (row-major) with one position per token.
     */
    public static double[] apply(double[] x, int tokens, int heads, int d, int[] positions, RopeConfig c, boolean inverse) {
        double[] out = x.clone();
        double[] f = frequencies(c);
        for (int t = 0; t < tokens; t++) {
            for (int h = 0; h < heads; h++) rotate(out, (t * heads + h) * d, d, positions[t], inverse, c, f);
        }
        return out;
    }
}
