package org.mla4j.exec;

import org.bytedeco.javacpp.Pointer;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Operands in the arrays' own host memory: the CPU placement. */
public final class HostOperands implements Operands {
    public static final HostOperands INSTANCE = new HostOperands();

    private HostOperands() {}

    @Override public int device() { return -1; }
    @Override public Pointer stream() { return null; }
    @Override public Pointer in(INDArray a) { return NativeLib.ptr(a); }
    @Override public Pointer out(INDArray a) { return NativeLib.ptr(a); }
    @Override public Pointer inOut(INDArray a) { return NativeLib.ptr(a); }
    @Override public Pointer workspace(long bytes) { return null; }
}
