package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.cache.KvCache;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.layers.MlaV3Block;
import org.mla4j.layers.MlaV3Config;
import org.mla4j.layers.MlaV3Decoder;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.RopeConfig;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The V3-style MLA block computes one function two ways: MHA mode over the whole sequence
 * (mla_attention, d_qk 48 / d_v 32 per head) and absorbed mode token by token (mla_dense_decode
 * over one latent KV head of 80 / 64 in a paged cache). They must agree.
 */
class DecodeAbsorbedVsMhaTest {
    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /**
     * Prefill outputs [b, s, d] and per-position decode outputs for a cache made by `cache`
     * (host or device): the largest relative error over positions.
     */
    static double maxRelErr(MlaV3Config cfg, DataType type, int batch, int seqLen, long seed,
                            java.util.function.IntFunction<KvCache> cache) {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", type, -1, -1, cfg.dModel);
        SDVariable pos = sd.placeHolder("pos", DataType.INT, -1, -1);
        MlaV3Block block = new MlaV3Block(sd, "attn", cfg, type, seed);
        block.forward(x, pos).rename("y");
        Nd4j.getRandom().setSeed(seed + 1);
        INDArray xs = Nd4j.randn(DataType.DOUBLE, batch, seqLen, cfg.dModel).castTo(type);
        INDArray positions = Nd4j.create(DataType.INT, batch, seqLen);
        for (int t = 0; t < seqLen; t++) positions.get(NDArrayIndex.all(), NDArrayIndex.point(t)).assign(t);
        INDArray prefill = sd.output(Map.of("x", xs, "pos", positions), "y").get("y");

        MlaV3Decoder decoder = new MlaV3Decoder(block);
        double worst = 0;
        try (KvCache c = cache.apply(cfg.dQkAbsorbed())) {
            for (int t = 0; t < seqLen; t++) {
                int[] p = new int[batch];
                java.util.Arrays.fill(p, t);
                INDArray got = decoder.step(xs.get(NDArrayIndex.all(), NDArrayIndex.point(t), NDArrayIndex.all()).dup('c'), p, c);
                INDArray want = prefill.get(NDArrayIndex.all(), NDArrayIndex.point(t), NDArrayIndex.all());
                double err = got.castTo(DataType.DOUBLE).sub(want.castTo(DataType.DOUBLE)).norm2Number().doubleValue()
                        / want.castTo(DataType.DOUBLE).norm2Number().doubleValue();
                worst = Math.max(worst, err);
            }
        }
        return worst;
    }

    @Test
    void absorbedDecodeEqualsMhaInFloat64() {
        MlaV3Config cfg = MlaV3Config.small();
        double err = maxRelErr(cfg, DataType.DOUBLE, 2, 19, 11,
                dQk -> PagedKvCache.plain(DataType.DOUBLE, dQk, 5, 16, 2, 8));
        assertTrue(err < 1e-10, "absorbed decode vs MHA prefill, float64: max relative error " + err);
    }

    @Test
    void absorbedDecodeEqualsMhaWithYarnAndBlockSizeOne() {
        RopeConfig yarn = RopeConfig.interleaved(16, 10000).withYarn(40, 64, 32, 1);
        MlaV3Config cfg = new MlaV3Config(64, 3, 32, 24, 16, 16, 8, yarn, 1e-6);
        double err = maxRelErr(cfg, DataType.DOUBLE, 1, 9, 3,
                dQk -> PagedKvCache.plain(DataType.DOUBLE, dQk, 1, 16, 1, 16));
        assertTrue(err < 1e-10, "YaRN, block size 1: max relative error " + err);
    }

    @Test
    void bf16AndFp8CachesStayWithinTheirPrecision() {
        MlaV3Config cfg = MlaV3Config.small();
        double bf16 = maxRelErr(cfg, DataType.FLOAT, 2, 12, 5,
                dQk -> PagedKvCache.plain(DataType.BFLOAT16, dQk, 4, 8, 2, 4));
        double fp8 = maxRelErr(cfg, DataType.FLOAT, 2, 12, 5,
                dQk -> PagedKvCache.fp8(CacheLayout.v32(cfg.kvLora, cfg.qkRope, 16), 4, 8, 2, 4));
        assertTrue(bf16 < 2e-2, "BF16 cache: max relative error " + bf16);
        assertTrue(fp8 < 8e-2, "FP8 V32 cache: max relative error " + fp8);
        assertTrue(bf16 > 0 && fp8 > bf16, "quantised caches must differ from the exact result: bf16 " + bf16 + ", fp8 " + fp8);
    }
}
