package org.mla4j.ops;

import java.util.Arrays;
import org.mla4j.MlaException;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Java-side argument checks, run before any native call. Every failure names the op, the
 * argument, what was expected and what arrived.
 */
public final class Check {
    private Check() {}

    public static MlaException fail(String op, String message) {
        return new MlaException(op + ": " + message);
    }

    public static void notNull(String op, String arg, INDArray a) {
        if (a == null) throw fail(op, arg + " is required but was null");
    }

    /** Rank check; `layout` describes the expected dims, e.g. "[b, s_q, h_q, d_qk]". */
    public static void rank(String op, String arg, INDArray a, int rank, String layout) {
        notNull(op, arg, a);
        if (a.rank() != rank) {
            throw fail(op, arg + " must have rank " + rank + " " + layout + ", got shape "
                    + Arrays.toString(a.shape()));
        }
    }

    public static void dim(String op, String arg, INDArray a, int dim, String name, long expected) {
        if (a.size(dim) != expected) {
            throw fail(op, arg + " dim " + dim + " (" + name + ") must be " + expected + ", got "
                    + a.size(dim) + " (shape " + Arrays.toString(a.shape()) + ")");
        }
    }

    public static void shape(String op, String arg, INDArray a, long... expected) {
        notNull(op, arg, a);
        if (!Arrays.equals(a.shape(), expected)) {
            throw fail(op, arg + " must have shape " + Arrays.toString(expected) + ", got "
                    + Arrays.toString(a.shape()));
        }
    }

    /** A float input type: FLOAT, DOUBLE, HALF or BFLOAT16. */
    public static void floatType(String op, String arg, INDArray a) {
        notNull(op, arg, a);
        DataType t = a.dataType();
        if (t != DataType.FLOAT && t != DataType.DOUBLE && t != DataType.HALF && t != DataType.BFLOAT16) {
            throw fail(op, arg + " must be FLOAT, DOUBLE, HALF or BFLOAT16, got " + t);
        }
    }

    public static void type(String op, String arg, INDArray a, DataType expected) {
        notNull(op, arg, a);
        if (a.dataType() != expected) {
            throw fail(op, arg + " must be " + expected + ", got " + a.dataType());
        }
    }

    public static void sameType(String op, String arg, INDArray a, String refArg, INDArray ref) {
        if (a.dataType() != ref.dataType()) {
            throw fail(op, arg + " must have the data type of " + refArg + " (" + ref.dataType()
                    + "), got " + a.dataType());
        }
    }

    public static void positive(String op, String arg, long value) {
        if (value <= 0) throw fail(op, arg + " must be > 0, got " + value);
    }

    public static void nonNegative(String op, String arg, long value) {
        if (value < 0) throw fail(op, arg + " must be >= 0, got " + value);
    }

    public static void divisible(String op, String arg, long value, String byArg, long by) {
        if (by <= 0 || value % by != 0) {
            throw fail(op, arg + " (" + value + ") must be divisible by " + byArg + " (" + by + ")");
        }
    }

    public static void finiteScale(String op, String arg, double value) {
        if (!Double.isFinite(value) || value <= 0) {
            throw fail(op, arg + " must be finite and > 0, got " + value);
        }
    }
}
