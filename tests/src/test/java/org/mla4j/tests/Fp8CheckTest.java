package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.mla4j.tests.support.Compare.rejects;

import java.io.File;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.mla4j.Mla4j;
import org.mla4j.MlaException;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.Fp8Check;
import org.mla4j.ops.KvDequantize;
import org.mla4j.ops.KvQuantize;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The checked mode of FP8 quantisation: without it one huge or non-finite value silently wipes
 * out the other values of its tile (shown here as the reason for the check); with it such input
 * is refused, naming the op, the argument, the value and its index, and nothing is written.
 */
class Fp8CheckTest {
    private static final CacheLayout L = Caches.V32_SMALL;  // 64 fp8 dims in tiles of 32, 16 bf16 dims

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    @TempDir
    File dir;

    /** kv [2 blocks, 4 tokens, 80] of values in [-2, 2). */
    private static INDArray kv(DataType t) {
        TestRandom r = TestRandom.create();
        return Nd.array(r.uniform(2 * 4 * L.dQk(), -2, 2), t, 2, 4, L.dQk());
    }

    @Test
    void oneHugeValueZeroesTheRestOfItsTileWithoutTheCheck() {
        INDArray kv = kv(DataType.FLOAT);
        kv.putScalar(new long[] {1, 2, 40}, 1e30);  // tile 1 (dims 32..63) of token (1, 2)
        INDArray bytes = Nd4j.exec(new KvQuantize(kv, L))[0];
        INDArray back = Nd4j.exec(new KvDequantize(bytes, L, 4, DataType.FLOAT))[0];
        for (int d = 32; d < 64; d++) {
            if (d != 40) assertEquals(0.0, Math.abs(back.getDouble(1, 2, d)), "dim " + d + " of the tile should have been wiped out");
        }
        double kept = 0;
        for (int d = 0; d < 32; d++) kept += Math.abs(back.getDouble(1, 2, d));
        assertTrue(kept > 1, "the row's other tile keeps its values");
    }

    @Test
    void quantizeRefusesWhatTheCheckRulesOut() {
        for (DataType t : new DataType[] {DataType.FLOAT, DataType.BFLOAT16, DataType.DOUBLE}) {
            INDArray huge = kv(t);
            huge.putScalar(new long[] {1, 2, 40}, 1e30);
            MlaException e = rejects("mla_kv_quantize", "kv", () -> Nd4j.exec(new KvQuantize(huge, L, Fp8Check.standard())));
            assertTrue(e.getMessage().contains("[1, 2, 40]") && e.getMessage().contains("limit 10000.0"), e.getMessage());
            INDArray inf = kv(t);
            inf.putScalar(new long[] {0, 3, 7}, Double.NEGATIVE_INFINITY);
            e = rejects("mla_kv_quantize", "kv", () -> Nd4j.exec(new KvQuantize(inf, L, Fp8Check.finite())));
            assertTrue(e.getMessage().contains("-Infinity at [0, 3, 7]"), e.getMessage());
            INDArray nan = kv(t);
            nan.putScalar(new long[] {1, 0, 70}, Double.NaN);  // in the bf16 part: refused too
            e = rejects("mla_kv_quantize", "kv", () -> Nd4j.exec(new KvQuantize(nan, L, Fp8Check.maxAbs(5))));
            assertTrue(e.getMessage().contains("NaN at [1, 0, 70]"), e.getMessage());
        }
        // HALF (ND4J's own isFinite condition counts a HALF NaN as finite)
        INDArray half = kv(DataType.HALF);
        half.putScalar(new long[] {0, 1, 9}, Double.NaN);
        rejects("mla_kv_quantize", "kv", () -> Nd4j.exec(new KvQuantize(half, L, Fp8Check.finite())));
        // finite() lets a huge finite value through; maxAbs(limit) only refuses past the limit
        INDArray big = kv(DataType.FLOAT);
        big.putScalar(new long[] {0, 0, 0}, 3000);
        Nd4j.exec(new KvQuantize(big, L, Fp8Check.finite()));
        Nd4j.exec(new KvQuantize(big, L, Fp8Check.maxAbs(3000)));
        rejects("mla_kv_quantize", "kv", () -> Nd4j.exec(new KvQuantize(big, L, Fp8Check.maxAbs(2999))));
        rejects("Fp8Check", "limit", () -> Fp8Check.maxAbs(Double.NaN));
    }

    @Test
    void checkedOutputEqualsUncheckedOutputForGoodInput() {
        INDArray kv = kv(DataType.FLOAT);
        INDArray plain = Nd4j.exec(new KvQuantize(kv, L))[0];
        INDArray checked = Nd4j.exec(new KvQuantize(kv, L, Fp8Check.standard()))[0];
        assertArrayEquals(Nd.intValues(plain), Nd.intValues(checked));
    }

    @Test
    void cacheAppendRefusesAndWritesNothing() {
        PagedKvCache cache = PagedKvCache.fp8(L, 4, 8, 2, 4).fp8Check(Fp8Check.standard());
        cache.append(kv(DataType.FLOAT).reshape(2, 4, L.dQk()));
        INDArray before = cache.data().dup();
        INDArray rows = Nd4j.rand(DataType.FLOAT, 2, 1, L.dQk());
        rows.putScalar(new long[] {1, 0, 3}, Double.POSITIVE_INFINITY);
        MlaException e = rejects("PagedKvCache.append", "rows", () -> cache.append(rows));
        assertTrue(e.getMessage().contains("[1, 0, 3]"), e.getMessage());
        assertEquals(before, cache.data());
        assertEquals(4, cache.length(0));
        assertEquals(4, cache.length(1));
    }

    @Test
    void theCheckTravelsWithASavedGraph() throws Exception {
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("kv", DataType.FLOAT, 2, 4, L.dQk());
        Mla4j.ops(sd).kvQuantize(in, L, Fp8Check.finite()).rename("bytes");
        File f = new File(dir, "quantize.sd");
        sd.save(f, true);
        SameDiff loaded = SameDiff.load(f, true);
        INDArray nan = kv(DataType.FLOAT);
        nan.putScalar(new long[] {0, 1, 2}, Double.NaN);
        Throwable t = assertThrows(RuntimeException.class, () -> loaded.output(Map.of("kv", nan), "bytes"));
        while (!(t instanceof MlaException) && t.getCause() != null) t = t.getCause();
        assertTrue(t instanceof MlaException && t.getMessage().contains("NaN at [0, 1, 2]"), String.valueOf(t));
        INDArray good = kv(DataType.FLOAT);
        assertArrayEquals(Nd.intValues(Nd4j.exec(new KvQuantize(good, L))[0]),
                Nd.intValues(loaded.output(Map.of("kv", good), "bytes").get("bytes")));
    }
}
