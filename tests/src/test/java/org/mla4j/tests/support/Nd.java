package org.mla4j.tests.support;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Moves data between plain Java arrays (row-major) and ND4J arrays. */
public final class Nd {
    private Nd() {}

    /** The float types every attention op accepts. */
    public static final DataType[] FLOAT_TYPES = {DataType.FLOAT, DataType.DOUBLE, DataType.HALF, DataType.BFLOAT16};

    /** A c-ordered array of type t holding data (rounded to t). */
    public static INDArray array(double[] data, DataType t, long... shape) {
        INDArray d = Nd4j.create(data, shape, 'c');
        return t == DataType.DOUBLE ? d : d.castTo(t);
    }

    /** A float32 array. */
    public static INDArray floats(double[] data, long... shape) {
        return array(data, DataType.FLOAT, shape);
    }

    /** An int32 array. */
    public static INDArray ints(int[] data, long... shape) {
        INDArray a = Nd4j.createFromArray(data);
        return shape.length == 1 && shape[0] == data.length ? a : a.reshape('c', shape).dup('c');
    }

    /** A UINT8 array of bytes (each entry 0..255). */
    public static INDArray bytes(int[] data, long... shape) {
        return ints(data, shape).castTo(DataType.UINT8);
    }

    /** The elements of a (row-major, views resolved) as doubles. */
    public static double[] values(INDArray a) {
        return a.dup('c').castTo(DataType.DOUBLE).data().asDouble();
    }

    /** The elements of an int or byte array (row-major) as ints; UINT8 gives 0..255. */
    public static int[] intValues(INDArray a) {
        return a.dup('c').castTo(DataType.INT).data().asInt();
    }

    /** data rounded to type t and read back (the values an op of type t actually sees). */
    public static double[] roundTo(double[] data, DataType t) {
        return values(array(data, t, data.length));
    }

    /** An array of type t filled with NaN (outputs that a correct op overwrites entirely). */
    public static INDArray nanFilled(DataType t, long... shape) {
        return Nd4j.create(t, shape).assign(Double.NaN);
    }

    /** An int array filled with a value no op writes. */
    public static INDArray intPoison(long... shape) {
        return Nd4j.create(DataType.INT, shape).assign(-777777);
    }

    /**
     * The same values as a, laid out with non-default strides: stored in the reverse order of
     * the dims and permuted back, so that even the last dim is not contiguous.
     */
    public static INDArray strided(INDArray a) {
        int r = a.rank();
        int[] rev = new int[r];
        for (int i = 0; i < r; i++) rev[i] = r - 1 - i;
        INDArray stored = a.permute(rev).dup('c');
        INDArray view = stored.permute(rev);
        if (view.ordering() == 'c' && org.nd4j.linalg.api.shape.Shape.hasDefaultStridesForShape(view) && r > 1) {
            throw new IllegalStateException("expected a non-contiguous view");
        }
        return view;
    }

    /**
     * The same values as a, as a view into a larger buffer at a non-zero offset (a slice of a
     * bigger array along dim 0): strides are the default ones, only the offset differs.
     */
    public static INDArray offsetView(INDArray a) {
        long[] shape = a.shape().clone();
        long n0 = shape[0];
        shape[0] = n0 + 2;
        INDArray big = Nd4j.create(a.dataType(), shape).assign(a.dataType().isFPType() ? Double.NaN : 99);
        INDArray view = big.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(1, 1 + n0));
        view.assign(a);
        return view;
    }

    public static long[] longs(int... v) {
        long[] l = new long[v.length];
        for (int i = 0; i < v.length; i++) l[i] = v[i];
        return l;
    }
}
