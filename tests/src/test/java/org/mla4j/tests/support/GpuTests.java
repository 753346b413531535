package org.mla4j.tests.support;

import static org.junit.jupiter.api.Assertions.fail;

import org.mla4j.Mla4j;
import org.mla4j.gpu.Gpu;

/** Shared set-up of the tests tagged "gpu": they need a CUDA device and fail without one. */
public final class GpuTests {
    private GpuTests() {}

    /** Installs the plugin and fails (never skips) when no CUDA device is usable. */
    public static void requireGpu() {
        Mla4j.install();
        if (!Gpu.available()) {
            fail("the gpu-tagged tests need a CUDA device; none is usable: " + Mla4j.nativeInfo());
        }
    }
}
