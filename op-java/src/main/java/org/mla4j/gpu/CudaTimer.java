package org.mla4j.gpu;

import org.bytedeco.javacpp.Pointer;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;

/** Device-side time between two points of a stream (CUDA events), for benchmarks. */
public final class CudaTimer implements AutoCloseable {
    private final int device;
    private Pointer start;
    private Pointer stop;

    public CudaTimer(int device) {
        Gpu.requireDevice("CudaTimer", device);
        this.device = device;
        Gpu.select(device);
        Pointer a = new Pointer(), b = new Pointer();
        NativeLib.check(MlaLib.mla_cuda_event_create(a));
        NativeLib.check(MlaLib.mla_cuda_event_create(b));
        start = a;
        stop = b;
    }

    public void start(CudaStream s) {
        NativeLib.check(MlaLib.mla_cuda_event_record(start, s.handle()));
    }

    public void stop(CudaStream s) {
        NativeLib.check(MlaLib.mla_cuda_event_record(stop, s.handle()));
    }

    /** Milliseconds between start and stop (waits for stop). */
    public double elapsedMs() {
        NativeLib.check(MlaLib.mla_cuda_event_synchronize(stop));
        float[] ms = new float[1];
        NativeLib.check(MlaLib.mla_cuda_event_elapsed_ms(start, stop, ms));
        return ms[0];
    }

    @Override
    public void close() {
        if (start == null) return;
        Gpu.select(device);
        MlaLib.mla_cuda_event_destroy(start);
        MlaLib.mla_cuda_event_destroy(stop);
        start = stop = null;
    }
}
