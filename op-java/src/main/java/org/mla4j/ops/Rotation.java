package org.mla4j.ops;

import org.bytedeco.javacpp.IntPointer;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Fills the VVPA output rotation of an attention call (no rotation when positions is null). */
final class Rotation {
    private Rotation() {}

    static void fill(MlaLib.mla_out_rotation r, INDArray positions, RopeConfig rope) {
        fill(r, NativeLib.intPtr(positions), rope);
    }

    /** positions: the address of the int32 positions (host or device), or null. */
    static void fill(MlaLib.mla_out_rotation r, IntPointer positions, RopeConfig rope) {
        if (positions == null) {
            r.positions(null);
            RopeConfig.none().fill(r.rope());
            return;
        }
        r.positions(positions);
        rope.fill(r.rope());
    }
}
