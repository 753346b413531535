package org.mla4j.gpu;

import org.bytedeco.javacpp.Pointer;
import org.mla4j.MlaException;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;

/**
 * A block of device memory owned by Java: allocated on one CUDA device, freed by
 * {@link #close()}. Its pointers are device addresses, for the native library only; Java never
 * dereferences them.
 */
public final class DeviceBuffer implements AutoCloseable {
    private final int device;
    private final long bytes;
    private Pointer base;

    private DeviceBuffer(int device, long bytes, Pointer base) {
        this.device = device;
        this.bytes = bytes;
        this.base = base;
    }

    /** Allocates {@code bytes} (> 0) on {@code device}. */
    public static DeviceBuffer allocate(int device, long bytes) {
        if (bytes <= 0) throw new MlaException("DeviceBuffer.allocate: bytes must be > 0, got " + bytes);
        Gpu.requireDevice("DeviceBuffer.allocate", device);
        Gpu.select(device);
        Pointer p = new Pointer();
        NativeLib.check(MlaLib.mla_cuda_malloc(p, bytes));
        return new DeviceBuffer(device, bytes, p);
    }

    public int device() { return device; }

    public long bytes() { return bytes; }

    /** The device address {@code offset} bytes in, as a pointer to hand to the library. */
    public Pointer at(long offset) {
        requireOpen();
        if (offset < 0 || offset > bytes) {
            throw new MlaException("DeviceBuffer.at: offset " + offset + " outside [0, " + bytes + "]");
        }
        return address(base.address() + offset);
    }

    /** A pointer holding a raw (device) address, with no position or limit. */
    static Pointer address(long address) {
        return new RawAddress(address);
    }

    private static final class RawAddress extends Pointer {
        RawAddress(long a) {
            this.address = a;
        }
    }

    /** Copies {@code n} bytes from host memory {@code src} to {@code offset}, ordered on stream. */
    public void upload(Pointer src, long offset, long n, CudaStream stream) {
        range("upload", offset, n);
        Gpu.select(device);
        NativeLib.check(MlaLib.mla_cuda_memcpy_async(at(offset), src, n, MlaLib.MLA_COPY_HOST_TO_DEVICE,
                stream == null ? null : stream.handle()));
    }

    /** Copies {@code n} bytes at {@code offset} to host memory {@code dst}, ordered on stream. */
    public void download(Pointer dst, long offset, long n, CudaStream stream) {
        range("download", offset, n);
        Gpu.select(device);
        NativeLib.check(MlaLib.mla_cuda_memcpy_async(dst, at(offset), n, MlaLib.MLA_COPY_DEVICE_TO_HOST,
                stream == null ? null : stream.handle()));
    }

    /** Sets every byte to {@code value}, ordered on stream. */
    public void fill(int value, CudaStream stream) {
        requireOpen();
        Gpu.select(device);
        NativeLib.check(MlaLib.mla_cuda_memset_async(base, value, bytes, stream == null ? null : stream.handle()));
    }

    private void range(String what, long offset, long n) {
        requireOpen();
        if (offset < 0 || n < 0 || offset + n > bytes) {
            throw new MlaException("DeviceBuffer." + what + ": bytes [" + offset + ", " + (offset + n)
                    + ") outside the buffer of " + bytes);
        }
    }

    private void requireOpen() {
        if (base == null) throw new IllegalStateException("DeviceBuffer: used after close()");
    }

    @Override
    public void close() {
        if (base == null) return;
        Gpu.select(device);
        int st = MlaLib.mla_cuda_free(base);
        base = null;
        NativeLib.check(st);
    }
}
