package org.mla4j.samples;

import java.util.function.Supplier;

/**
 * One benchmark row: what runs (built lazily by {@link #setup}, so filtered-out cases allocate
 * nothing), on which shape, and how much work one run does. The work is counted once, here, by
 * the conventions of {@link BenchWork}; the rate reported is work / median time.
 */
final class BenchCase {
    /** Which ceiling a case is compared with. */
    enum Bound {
        /** FLOP/s against the float32 gemm rate. */
        COMPUTE,
        /** bytes/s against the copy rate. */
        MEMORY
    }

    final String op;
    final String impl;
    final String dtype;
    final String shape;
    private double flops;
    private double bytes;
    private Bound bound = Bound.COMPUTE;
    private String note = "";
    private String group;
    private boolean fullOnly;
    private Supplier<Runnable> setup;

    private BenchCase(String op, String impl, String dtype, String shape) {
        this.op = op;
        this.impl = impl;
        this.dtype = dtype;
        this.shape = shape;
    }

    /** A case of {@code op} run by {@code impl} on {@code dtype} inputs of {@code shape}. */
    static BenchCase of(String op, String impl, String dtype, String shape) {
        return new BenchCase(op, impl, dtype, shape);
    }

    /** FLOP of one run (0: not counted). */
    BenchCase flops(double f) { flops = f; return this; }

    /** Bytes moved by one run (0: not counted). */
    BenchCase bytes(double b) { bytes = b; return this; }

    /** Compared with the copy rate rather than the gemm rate. */
    BenchCase memoryBound() { bound = Bound.MEMORY; return this; }

    BenchCase note(String n) { note = n; return this; }

    /** Rows sharing a group are printed side by side at the end. */
    BenchCase group(String g) { group = g; return this; }

    /** Left out of the --quick run. */
    BenchCase fullOnly() { return fullOnly(true); }

    /** Left out of the --quick run when {@code only} is true. */
    BenchCase fullOnly(boolean only) { fullOnly = only; return this; }

    /** Builds the inputs (not timed) and returns the body that is timed. */
    BenchCase setup(Supplier<Runnable> s) { setup = s; return this; }

    double flops() { return flops; }
    double bytes() { return bytes; }
    Bound bound() { return bound; }
    String note() { return note; }
    String group() { return group; }
    boolean isFullOnly() { return fullOnly; }
    Runnable build() { return setup.get(); }

    /** Whether any of the comma-separated, case-insensitive words occurs in op or impl. */
    boolean matches(String filter) {
        if (filter == null || filter.isBlank()) return true;
        String hay = (op + " " + impl + " " + dtype).toLowerCase();
        for (String w : filter.toLowerCase().split(",")) {
            if (!w.isBlank() && hay.contains(w.trim())) return true;
        }
        return false;
    }
}
