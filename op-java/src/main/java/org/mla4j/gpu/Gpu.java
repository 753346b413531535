package org.mla4j.gpu;

import org.mla4j.MlaException;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;

/**
 * The CUDA devices the plugin's native library can use. The library owns the GPU itself
 * (device memory, streams, kernels): ND4J's array backend stays on the CPU.
 */
public final class Gpu {
    private Gpu() {}

    /** Number of usable CUDA devices; 0 without a GPU, a driver or a CUDA build. */
    public static int deviceCount() {
        NativeLib.load();
        return Math.max(0, MlaLib.mla_cuda_device_count());
    }

    /** Whether at least one CUDA device is usable. */
    public static boolean available() {
        return deviceCount() > 0;
    }

    /** Name, compute capability, multiprocessors and memory of a device. */
    public static String describe(int device) {
        requireDevice("Gpu.describe", device);
        try (MlaLib.mla_cuda_device_info info = new MlaLib.mla_cuda_device_info()) {
            NativeLib.check(MlaLib.mla_cuda_device_info_get(device, info));
            return info.name().getString() + " (sm_" + info.major() + info.minor() + ", "
                    + info.multiprocessors() + " SMs, " + (info.total_memory() >> 20) + " MiB)";
        }
    }

    /** Compute capability as major * 10 + minor (90 for Hopper). */
    public static int computeCapability(int device) {
        requireDevice("Gpu.computeCapability", device);
        try (MlaLib.mla_cuda_device_info info = new MlaLib.mla_cuda_device_info()) {
            NativeLib.check(MlaLib.mla_cuda_device_info_get(device, info));
            return info.major() * 10 + info.minor();
        }
    }

    /** Makes {@code device} the calling thread's current device for the library's calls. */
    static void select(int device) {
        NativeLib.check(MlaLib.mla_cuda_set_device(device));
    }

    /** Throws an {@link MlaException} naming {@code what} unless {@code device} exists. */
    public static void requireDevice(String what, int device) {
        int n = deviceCount();
        if (device < 0 || device >= n) {
            throw new MlaException(what + ": CUDA device " + device + " does not exist ("
                    + (n == 0 ? "no CUDA device is available: " + NativeLib.describe() : n + " devices") + ")");
        }
    }
}
