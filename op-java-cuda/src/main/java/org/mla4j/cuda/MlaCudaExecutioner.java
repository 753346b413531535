package org.mla4j.cuda;

import java.util.List;
import org.mla4j.exec.MlaExecutioner;
import org.mla4j.ops.MlaOp;
import org.nd4j.jita.allocator.impl.AtomicAllocator;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.CustomOp;
import org.nd4j.linalg.api.ops.OpContext;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;
import org.nd4j.linalg.jcublas.context.CudaContext;
import org.nd4j.linalg.jcublas.ops.executioner.CudaExecutioner;

/**
 * ND4J's CUDA executioner with one change: mla4j ops run through the plugin's native library.
 * Ops with a CUDA kernel (dense and sparse decode, the sparse prefill forward, KV append) run
 * in place on ND4J's device buffers, ordered on ND4J's stream for the thread; the others run on
 * the host copies of their arrays.
 * {@link org.mla4j.Mla4j#install()} installs it when ND4J runs on nd4j-cuda-11.6.
 *
 * <p>ND4J 1.0.0-M2.1's CUDA library holds machine code for sm_37..sm_86 only and needs CUDA 11;
 * on Hopper and Blackwell GPUs ND4J cannot run at all, so there the CPU backend with the GPU
 * placement ({@link org.mla4j.gpu.Placement}) is the way to use the plugin's kernels.
 */
public class MlaCudaExecutioner extends CudaExecutioner implements MlaExecutioner {

    @Override
    public INDArray[] exec(CustomOp op) {
        if (op instanceof MlaOp) return run((MlaOp) op, null);
        return super.exec(op);
    }

    @Override
    public INDArray[] exec(CustomOp op, OpContext context) {
        if (op instanceof MlaOp) return run((MlaOp) op, context);
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

    private INDArray[] run(MlaOp op, OpContext oc) {
        List<INDArray> inputs = oc != null ? oc.getInputArrays() : op.inputArguments();
        INDArray[] in = inputs == null ? new INDArray[0] : inputs.toArray(new INDArray[0]);
        if (!op.hasDeviceKernel()) return runOnHost(op, oc, in);
        // Outputs the op allocates itself are created by ND4J on the device; the context of the
        // first input orders everything on ND4J's stream for this thread.
        AtomicAllocator allocator = AtomicAllocator.getInstance();
        CudaContext ctx = allocator.getFlowController().prepareAction(null, in);
        BackendOperands operands = new BackendOperands(allocator, ctx);
        INDArray[] out = op.executeOn(operands, oc);
        // Outputs written on the device, inputs read, all on ctx's stream.
        for (int i = 0; i < out.length; i++) {
            allocator.getFlowController().registerAction(ctx, out[i], i == 0 ? in : new INDArray[0]);
        }
        operands.release();
        return out;
    }

    /** Ops without a CUDA kernel: their arrays are brought to the host and written there. */
    private INDArray[] runOnHost(MlaOp op, OpContext oc, INDArray[] in) {
        AtomicAllocator allocator = AtomicAllocator.getInstance();
        for (INDArray a : in) if (a != null) allocator.synchronizeHostData(a);
        INDArray[] out = op.execute(oc);
        for (INDArray a : out) if (a != null) allocator.tickHostWrite(a);
        return out;
    }
}
