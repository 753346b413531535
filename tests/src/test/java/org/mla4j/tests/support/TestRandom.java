package org.mla4j.tests.support;

import java.util.Random;

/**
 * Seeded random source of a test. The seed comes from {@link System#nanoTime()} unless the
 * system property {@code mla4j.seed} sets it, and every assertion message carries it
 * ({@link #tag()}) so that a failure can be replayed with {@code -Dmla4j.seed=...}.
 */
public final class TestRandom {
    private final long seed;
    private final Random random;

    private TestRandom(long seed) {
        this.seed = seed;
        this.random = new Random(seed);
    }

    /** A fresh source (seed from the clock or from -Dmla4j.seed). */
    public static TestRandom create() {
        String fixed = System.getProperty("mla4j.seed");
        return new TestRandom(fixed != null && !fixed.isEmpty() ? Long.parseLong(fixed) : System.nanoTime());
    }

    public long seed() {
        return seed;
    }

    /** "seed=..." for assertion messages. */
    public String tag() {
        return "seed=" + seed + " (replay with -Dmla4j.seed=" + seed + ")";
    }

    /** n standard normal values times {@code scale}. */
    public double[] normal(int n, double scale) {
        double[] a = new double[n];
        for (int i = 0; i < n; i++) a[i] = random.nextGaussian() * scale;
        return a;
    }

    public double[] normal(int n) {
        return normal(n, 1.0);
    }

    /** n values uniform in [lo, hi). */
    public double[] uniform(int n, double lo, double hi) {
        double[] a = new double[n];
        for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * random.nextDouble();
        return a;
    }

    public int nextInt(int bound) {
        return random.nextInt(bound);
    }

    /** Uniform in [lo, hi] (both included). */
    public int between(int lo, int hi) {
        return lo + random.nextInt(hi - lo + 1);
    }

    public double nextDouble() {
        return random.nextDouble();
    }

    public boolean nextBoolean() {
        return random.nextBoolean();
    }

    /** A random permutation of 0..n-1. */
    public int[] permutation(int n) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = random.nextInt(i + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    /** k distinct values from 0..n-1 in random order (k <= n). */
    public int[] distinct(int n, int k) {
        int[] p = permutation(n);
        int[] out = new int[k];
        System.arraycopy(p, 0, out, 0, k);
        return out;
    }
}
