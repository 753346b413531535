package org.mla4j.tests.support;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import org.junit.jupiter.api.function.Executable;
import org.mla4j.MlaException;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Comparisons against the float64 reference, with the tolerances of ops.md section 8:
 * relative error {@code ||out - ref|| / ||ref||} below 1e-5 for float32 / float64 outputs and
 * below 1e-2 for bfloat16 / float16; lse and max_logit within 1e-3 absolute; infinities
 * exactly. Attention outputs ({@link #output}) must also be exactly zero where the reference is
 * (a row with no key, a row whose sink is +inf). NaN in an actual value always fails: outputs
 * are poisoned with NaN before the call, so a NaN that survives is an element the op did not
 * write.
 */
public final class Compare {
    private Compare() {}

    public static final double LSE_TOL = 1e-3;

    /** Relative tolerance of an output of type t against the float64 reference. */
    public static double tolerance(DataType t) {
        return t == DataType.FLOAT || t == DataType.DOUBLE ? 1e-5 : 1e-2;
    }

    /** ||a - e|| / ||e|| over the entries where e is finite (0 when both are zero). */
    public static double relErr(double[] actual, double[] expected) {
        double num = 0, den = 0;
        for (int i = 0; i < expected.length; i++) {
            if (!Double.isFinite(expected[i])) continue;
            double d = actual[i] - expected[i];
            num += d * d;
            den += expected[i] * expected[i];
        }
        if (den == 0) return num == 0 ? 0 : Double.POSITIVE_INFINITY;
        return Math.sqrt(num / den);
    }

    /**
     * Asserts that actual matches expected: same length, no NaN, infinities equal, relative
     * error below tol.
     */
    public static void close(String what, double[] actual, double[] expected, double tol, String ctx) {
        compare(what, actual, expected, tol, false, ctx);
    }

    public static void close(String what, INDArray actual, double[] expected, double tol, String ctx) {
        assertNotNull(actual, what + " is null; " + ctx);
        close(what, Nd.values(actual), expected, tol, ctx);
    }

    /** As {@link #close}, and every element the reference has exactly zero is exactly zero. */
    public static void output(String what, INDArray actual, double[] expected, double tol, String ctx) {
        assertNotNull(actual, what + " is null; " + ctx);
        compare(what, Nd.values(actual), expected, tol, true, ctx);
    }

    private static void compare(String what, double[] actual, double[] expected, double tol, boolean zeros, String ctx) {
        assertEquals(expected.length, actual.length, what + ": length; " + ctx);
        exactSpecials(what, actual, expected, zeros, ctx);
        double err = relErr(actual, expected);
        assertTrue(err < tol, what + ": relative error " + err + " >= " + tol + "; " + ctx);
    }

    /** Element-wise absolute comparison (lse, max_logit): infinities exactly, others within tol. */
    public static void closeAbs(String what, double[] actual, double[] expected, double tol, String ctx) {
        assertEquals(expected.length, actual.length, what + ": length; " + ctx);
        exactSpecials(what, actual, expected, false, ctx);
        for (int i = 0; i < expected.length; i++) {
            if (!Double.isFinite(expected[i])) continue;
            double d = Math.abs(actual[i] - expected[i]);
            if (!(d <= tol)) {
                fail(what + "[" + i + "] = " + actual[i] + ", expected " + expected[i] + " (|diff| " + d
                        + " > " + tol + "); " + ctx);
            }
        }
    }

    public static void closeAbs(String what, INDArray actual, double[] expected, double tol, String ctx) {
        assertNotNull(actual, what + " is null; " + ctx);
        closeAbs(what, Nd.values(actual), expected, tol, ctx);
    }

    /** NaN never; an infinite (and with zeros, an exactly zero) expectation must be met exactly. */
    private static void exactSpecials(String what, double[] actual, double[] expected, boolean zeros, String ctx) {
        for (int i = 0; i < expected.length; i++) {
            if (Double.isNaN(actual[i])) {
                fail(what + "[" + i + "] is NaN (not written, or a NaN leaked), expected " + expected[i] + "; " + ctx);
            }
            if (Double.isNaN(expected[i])) fail(what + ": the reference has NaN at " + i + "; " + ctx);
            if (Double.isInfinite(expected[i]) || (zeros && expected[i] == 0.0)) {
                if (actual[i] != expected[i]) {
                    fail(what + "[" + i + "] = " + actual[i] + ", expected exactly " + expected[i] + "; " + ctx);
                }
            } else if (Double.isInfinite(actual[i])) {
                fail(what + "[" + i + "] = " + actual[i] + ", expected " + expected[i] + "; " + ctx);
            }
        }
    }

    /** Bit-identical arrays (same type, shape and every element's bits). */
    public static void identical(String what, INDArray actual, INDArray expected, String ctx) {
        assertEquals(expected.dataType(), actual.dataType(), what + ": type; " + ctx);
        assertTrue(Arrays.equals(expected.shape(), actual.shape()),
                what + ": shape " + Arrays.toString(actual.shape()) + " vs " + Arrays.toString(expected.shape()) + "; " + ctx);
        double[] a = Nd.values(actual), e = Nd.values(expected);
        for (int i = 0; i < e.length; i++) {
            if (Double.doubleToLongBits(a[i]) != Double.doubleToLongBits(e[i])) {
                fail(what + "[" + i + "] = " + a[i] + " differs from " + e[i] + "; " + ctx);
            }
        }
    }

    /**
     * Runs a call that must be rejected: an {@link MlaException} (an IllegalArgumentException)
     * whose message names the op and the argument.
     */
    public static MlaException rejects(String op, String arg, Executable call) {
        MlaException e = assertThrows(MlaException.class, call, "expected " + op + " to reject bad " + arg);
        String m = String.valueOf(e.getMessage());
        assertTrue(m.contains(op), "message should name the op " + op + ": " + m);
        assertTrue(m.contains(arg), "message should name the argument " + arg + ": " + m);
        return e;
    }
}
