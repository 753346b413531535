package org.mla4j.exec;

import java.util.List;
import org.mla4j.ops.MlaOp;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.CustomOp;
import org.nd4j.linalg.api.ops.OpContext;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;
import org.nd4j.linalg.cpu.nativecpu.ops.NativeOpExecutioner;

/**
 * ND4J's CPU executioner with one change: mla4j ops run through the plugin's native library;
 * every other op goes to ND4J as before. Installed by {@link org.mla4j.Mla4j#install()}. One
 * instance serves every thread; it keeps no state of its own.
 */
public class MlaCpuExecutioner extends NativeOpExecutioner implements MlaExecutioner {

    @Override
    public INDArray[] exec(CustomOp op) {
        if (op instanceof MlaOp) return ((MlaOp) op).execute(null);
        return super.exec(op);
    }

    @Override
    public INDArray[] exec(CustomOp op, OpContext context) {
        if (op instanceof MlaOp) return ((MlaOp) op).execute(context);
        return super.exec(op, context);
    }

    @Override
    public List<LongShapeDescriptor> calculateOutputShape(CustomOp op) {
        if (op instanceof MlaOp) return ((MlaOp) op).calculateOutputShape(null);
        return super.calculateOutputShape(op);
    }

    @Override
    public List<LongShapeDescriptor> calculateOutputShape(CustomOp op, OpContext context) {
        if (op instanceof MlaOp) return ((MlaOp) op).calculateOutputShape(context);
        return super.calculateOutputShape(op, context);
    }
}
