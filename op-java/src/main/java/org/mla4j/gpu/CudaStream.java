package org.mla4j.gpu;

import org.bytedeco.javacpp.Pointer;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;

/** A CUDA stream of one device: the library's calls and copies on it run in order. */
public final class CudaStream implements AutoCloseable {
    private final int device;
    private Pointer handle;

    public CudaStream(int device) {
        Gpu.requireDevice("CudaStream", device);
        this.device = device;
        Gpu.select(device);
        Pointer p = new Pointer();
        NativeLib.check(MlaLib.mla_cuda_stream_create(p));
        this.handle = p;
    }

    public int device() { return device; }

    /** The cudaStream_t, for the library's exec.stream. */
    public Pointer handle() {
        if (handle == null) throw new IllegalStateException("CudaStream: used after close()");
        return handle;
    }

    /** Waits until everything queued on the stream has finished. */
    public void synchronize() {
        Gpu.select(device);
        NativeLib.check(MlaLib.mla_cuda_stream_synchronize(handle()));
    }

    @Override
    public void close() {
        if (handle == null) return;
        Gpu.select(device);
        int st = MlaLib.mla_cuda_stream_destroy(handle);
        handle = null;
        NativeLib.check(st);
    }
}
