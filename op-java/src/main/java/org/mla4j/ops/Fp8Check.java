package org.mla4j.ops;

import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.LongPointer;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.Shape;

/**
 * The checked mode of FP8 quantisation ({@link KvQuantize}, {@link KvAppend} into a V32 or
 * MODEL1 cache, the caches' {@code append}).
 *
 * <p>Why: an FP8 tile (e.g. 128 values of a V32 row) shares one power-of-two scale,
 * {@code 2^ceil(log2(amax / 448))}, and e4m3's smallest step is {@code 2^-9} of it. One value
 * of 1e30, or an Inf or NaN, in a tile therefore turns every other value of the tile into 0 (or
 * the whole tile into NaN), and nothing says so. With a check, such input is refused with an
 * {@link org.mla4j.MlaException} naming the op, the argument, the value and where it is; nothing
 * is written.
 *
 * <ul>
 * <li>{@link #OFF}: no check (the default; quantisation reads each value once);</li>
 * <li>{@link #finite()}: refuses NaN and +-Inf;</li>
 * <li>{@link #maxAbs(double)}: also refuses a value whose magnitude exceeds the limit;
 * {@link #standard()} is {@code maxAbs(1e4)}: a value of 1e4 makes its tile's scale 32 and
 * already zeroes the tile's values below 1/32, while normalised latents (DeepSeek's kv_norm
 * output) stay far below it.</li>
 * </ul>
 *
 * <p>Cost: one more multi-threaded pass over the input before quantising, in native code
 * ({@code mla_find_unquantizable}, a separate C entry point: the params structs of quantise and
 * append are unchanged, so existing C callers are unaffected). Figures: docs/perf.md.
 */
public final class Fp8Check {
    private static final int MODE_OFF = 0, MODE_FINITE = 1, MODE_MAX_ABS = 2;

    /** No check. */
    public static final Fp8Check OFF = new Fp8Check(MODE_OFF, Double.POSITIVE_INFINITY);

    private final int mode;
    private final double limit;

    private Fp8Check(int mode, double limit) {
        this.mode = mode;
        this.limit = limit;
    }

    /** Refuses NaN and +-Inf. */
    public static Fp8Check finite() {
        return new Fp8Check(MODE_FINITE, Double.POSITIVE_INFINITY);
    }

    /** Refuses NaN, +-Inf and any value with {@code |x| > limit} (limit finite, > 0). */
    public static Fp8Check maxAbs(double limit) {
        if (!(limit > 0) || !Double.isFinite(limit)) {
            throw Check.fail("Fp8Check", "limit must be finite and > 0, got " + limit);
        }
        return new Fp8Check(MODE_MAX_ABS, limit);
    }

    /** {@code maxAbs(1e4)}: see the class description. */
    public static Fp8Check standard() {
        return maxAbs(1e4);
    }

    public boolean enabled() {
        return mode != MODE_OFF;
    }

    /** The magnitude limit (+Inf when none). */
    public double limit() {
        return limit;
    }

    /**
     * Refuses {@code x} when the check finds a value it rules out. {@code tile} is the number of
     * values that share a scale, for the message.
     */
    public void verify(String op, String arg, INDArray x, int tile) {
        if (mode == MODE_OFF || x.isEmpty()) return;
        INDArray c = MlaOp.isContiguous(x) ? x : x.dup('c');
        long first;
        try (LongPointer found = new LongPointer(1)) {
            NativeLib.load();
            NativeLib.check(MlaLib.mla_find_unquantizable(NativeLib.dtype(c.dataType()), NativeLib.ptr(c), c.length(),
                    limit, 0, found));
            first = found.get();
        }
        if (first < 0) return;
        long[] at = Shape.ind2subC(x.shape(), first);
        double v = x.getDouble(at);
        String shown = x.dataType() == DataType.DOUBLE ? String.valueOf(v) : String.valueOf((float) v);
        String why = Double.isFinite(v)
                ? "beyond the checked limit " + limit + " (Fp8Check.maxAbs): its FP8 tile of " + tile
                  + " values would get the scale 2^" + scaleExponent(v) + " and every other value of the tile below "
                  + "2^" + (scaleExponent(v) - 10) + " would become 0"
                : "not finite: its FP8 tile of " + tile + " values would lose every other value";
        throw Check.fail(op, arg + " holds " + shown + " at " + Arrays.toString(at) + ", " + why + "; nothing was written");
    }

    /** log2 of the tile scale a maximum of |v| gives (ops.md section 5). */
    private static int scaleExponent(double v) {
        return (int) Math.ceil(Math.log(Math.max(Math.abs(v) / 448, 1e-4)) / Math.log(2));
    }

    void addArgs(MlaOp op) {
        op.addIArgument(mode);
        op.addTArgument(mode == MODE_MAX_ABS ? limit : 0);
    }

    /** The check stored at iarg {@code iAt} / targ {@code tAt}; absent (graphs saved before it existed): OFF. */
    static Fp8Check fromArgs(List<Long> i, int iAt, List<Double> t, int tAt) {
        if (i.size() <= iAt) return OFF;
        int mode = i.get(iAt).intValue();
        if (mode == MODE_FINITE) return finite();
        if (mode == MODE_MAX_ABS) return maxAbs(t.get(tAt));
        return OFF;
    }

    @Override
    public String toString() {
        return mode == MODE_OFF ? "Fp8Check.OFF" : mode == MODE_FINITE ? "Fp8Check.finite()"
                : "Fp8Check.maxAbs(" + limit + ")";
    }
}
