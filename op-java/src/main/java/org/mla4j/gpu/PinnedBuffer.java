package org.mla4j.gpu;

import org.bytedeco.javacpp.Pointer;
import org.mla4j.MlaException;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;

/**
 * Page-locked host memory: copies between it and a device run at the bus's speed and
 * asynchronously, where copies from ordinary (pageable) memory are staged by the driver.
 */
public final class PinnedBuffer implements MemoryBlock {
    private final long bytes;
    private Pointer base;

    private PinnedBuffer(long bytes, Pointer base) {
        this.bytes = bytes;
        this.base = base;
    }

    /** Allocates {@code bytes} (> 0) of page-locked host memory. */
    public static PinnedBuffer allocate(long bytes) {
        if (bytes <= 0) throw new MlaException("PinnedBuffer.allocate: bytes must be > 0, got " + bytes);
        Pointer p = new Pointer();
        NativeLib.check(MlaLib.mla_cuda_malloc_host(p, bytes));
        return new PinnedBuffer(bytes, p);
    }

    @Override
    public long bytes() { return bytes; }

    @Override
    public Pointer at(long offset) {
        if (base == null) throw new IllegalStateException("PinnedBuffer: used after close()");
        if (offset < 0 || offset > bytes) {
            throw new MlaException("PinnedBuffer.at: offset " + offset + " outside [0, " + bytes + "]");
        }
        return DeviceBuffer.address(base.address() + offset);
    }

    @Override
    public void close() {
        if (base == null) return;
        int st = MlaLib.mla_cuda_free_host(base);
        base = null;
        NativeLib.check(st);
    }
}
