package org.mla4j.tests.gpu;

import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.mla4j.cache.DeviceKvCache;
import org.mla4j.layers.MlaV3Config;
import org.mla4j.ops.CacheLayout;
import org.mla4j.tests.DecodeAbsorbedVsMhaAccess;
import org.mla4j.tests.support.GpuTests;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * A V3 block decoded token by token over device caches (BF16 and FP8) equals its MHA prefill
 * within the cache's precision, as on the host.
 */
@Tag("gpu")
class GpuDecoderTest {

    @BeforeAll
    static void gpu() {
        GpuTests.requireGpu();
    }

    @Test
    void deviceCachesStayWithinTheirPrecision() {
        MlaV3Config cfg = MlaV3Config.small();
        double bf16 = DecodeAbsorbedVsMhaAccess.maxRelErr(cfg, DataType.FLOAT, 2, 12, 5,
                dQk -> DeviceKvCache.plain(0, DataType.BFLOAT16, dQk, 4, 8, 2, 4));
        double v32 = DecodeAbsorbedVsMhaAccess.maxRelErr(cfg, DataType.FLOAT, 2, 12, 5,
                dQk -> DeviceKvCache.fp8(0, CacheLayout.v32(cfg.kvLora, cfg.qkRope, 16), 4, 8, 2, 4));
        double model1 = DecodeAbsorbedVsMhaAccess.maxRelErr(cfg, DataType.FLOAT, 2, 12, 5,
                dQk -> DeviceKvCache.fp8(0, CacheLayout.model1(cfg.kvLora, cfg.qkRope, 16), 4, 8, 2, 4));
        assertTrue(bf16 < 2e-2, "device BF16 cache: max relative error " + bf16);
        assertTrue(v32 < 8e-2, "device FP8 V32 cache: max relative error " + v32);
        assertTrue(model1 < 8e-2, "device FP8 MODEL1 cache: max relative error " + model1);
    }
}
