package org.mla4j.cuda;

import org.bytedeco.javacpp.Pointer;
import org.mla4j.exec.Operands;
import org.mla4j.gpu.DeviceBuffer;
import org.nd4j.jita.allocator.impl.AtomicAllocator;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.jcublas.context.CudaContext;

/**
 * Operands of one call on ND4J's CUDA backend: the device pointers of ND4J's own buffers (made
 * current on the device first), ND4J's stream, and workspace from the plugin's allocator. The
 * workspace is freed after ND4J's stream has finished the call.
 */
final class BackendOperands implements Operands {
    private final AtomicAllocator allocator;
    private final CudaContext ctx;
    private final int device;
    private DeviceBuffer workspace;

    BackendOperands(AtomicAllocator allocator, CudaContext ctx) {
        this.allocator = allocator;
        this.ctx = ctx;
        this.device = Nd4j.getAffinityManager().getDeviceForCurrentThread();
    }

    @Override
    public int device() {
        return device;
    }

    @Override
    public Pointer stream() {
        return ctx.getOldStream();
    }

    @Override
    public Pointer in(INDArray a) {
        return a == null ? null : allocator.getPointer(a, ctx);
    }

    @Override
    public Pointer out(INDArray a) {
        return in(a);
    }

    @Override
    public Pointer inOut(INDArray a) {
        return in(a);
    }

    @Override
    public Pointer workspace(long bytes) {
        if (bytes <= 0) return null;
        if (workspace != null) workspace.close();
        workspace = DeviceBuffer.allocate(device, bytes);
        return workspace.at(0);
    }

    /** Waits for ND4J's stream when the call had a workspace, then frees it. */
    void release() {
        if (workspace == null) return;
        ctx.syncOldStream();
        workspace.close();
        workspace = null;
    }
}
