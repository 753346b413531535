package org.mla4j.tests.support;

import org.mla4j.ops.RopeConfig;

/** Small helpers shared by the attention tests: sinks, positions, rope descriptors. */
public final class Problems {
    private Problems() {}

    /** Sink kinds of ops.md section 8. */
    public enum Sink { NONE, FINITE, PLUS_INF, MINUS_INF, MIXED }

    /**
     * A sink vector [hQ] of the given kind (null for NONE); MIXED cycles through finite,
     * +inf and -inf.
     */
    public static double[] sink(TestRandom r, Sink kind, int hQ) {
        if (kind == Sink.NONE) return null;
        double[] s = r.normal(hQ, 1.5);
        for (int h = 0; h < hQ; h++) {
            switch (kind) {
                case PLUS_INF: s[h] = Double.POSITIVE_INFINITY; break;
                case MINUS_INF: s[h] = Double.NEGATIVE_INFINITY; break;
                case MIXED:
                    if (h % 3 == 1) s[h] = Double.POSITIVE_INFINITY;
                    if (h % 3 == 2) s[h] = Double.NEGATIVE_INFINITY;
                    break;
                default: break;
            }
        }
        return s;
    }

    /** The sink as the op sees it (float32). */
    public static double[] asFloat(double[] sink) {
        if (sink == null) return null;
        double[] f = new double[sink.length];
        for (int i = 0; i < f.length; i++) f[i] = (float) sink[i];
        return f;
    }

    /** Random positions in [0, max). */
    public static int[] positions(TestRandom r, int n, int max) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = r.nextInt(max);
        return p;
    }

    /** A VVPA rotation of the last ropeDim dims: plain RoPE or YaRN, interleaved or half-split. */
    public static RopeConfig rope(TestRandom r, int ropeDim) {
        RopeConfig c = r.nextBoolean() ? RopeConfig.interleaved(ropeDim, 10000) : RopeConfig.halfSplit(ropeDim, 10000);
        return r.nextBoolean() ? c.withYarn(16, 4096, 32, 1) : c;
    }

    /** The softmax scale the ops use by default, as the float32 the C ABI takes. */
    public static double defaultScale(int dQk) {
        return (float) (1.0 / Math.sqrt(dQk));
    }
}
