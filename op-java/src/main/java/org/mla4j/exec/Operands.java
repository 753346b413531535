package org.mla4j.exec;

import org.bytedeco.javacpp.Pointer;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Where the operands of one native call live: the arrays' own host memory
 * ({@link HostOperands}), or device copies made for the call ({@code org.mla4j.gpu.DeviceCall}).
 * Ops fill their native parameters through this, so one code path serves both placements.
 * Arrays passed here are row-major contiguous; null stays null.
 */
public interface Operands {
    /** The CUDA device of the call, or -1 for the CPU. */
    int device();

    /** The stream the call is ordered on (null on the CPU). */
    Pointer stream();

    /** Address of an input's elements (read only by the call). */
    Pointer in(INDArray a);

    /** Address where an output's elements are written. */
    Pointer out(INDArray a);

    /** Address of an array the call reads and writes. */
    Pointer inOut(INDArray a);

    /** Scratch memory of at least {@code bytes} for the call (null when bytes is 0). */
    Pointer workspace(long bytes);
}
