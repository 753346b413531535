package org.mla4j.tests.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.mla4j.MlaException;
import org.mla4j.cache.DeviceKvCache;
import org.mla4j.cache.KvCache;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.ops.CacheLayout;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.GpuTests;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The device-resident cache against the host cache fed the same rows: after every append the
 * device pool holds the same bytes as the host pool (the FP8 layouts quantised on the GPU
 * exactly as on the CPU), and decode from it gives the host's results.
 */
@Tag("gpu")
class DeviceKvCacheTest {

    @BeforeAll
    static void gpu() {
        GpuTests.requireGpu();
    }

    private static KvCache host(CacheLayout l, int dQk, int bs, int blocks, int batch, int perSeq) {
        return l.isFp8() ? PagedKvCache.fp8(l, bs, blocks, batch, perSeq)
                : PagedKvCache.plain(DataType.BFLOAT16, dQk, bs, blocks, batch, perSeq);
    }

    private static DeviceKvCache device(CacheLayout l, int dQk, int bs, int blocks, int batch, int perSeq) {
        return l.isFp8() ? DeviceKvCache.fp8(0, l, bs, blocks, batch, perSeq)
                : DeviceKvCache.plain(0, DataType.BFLOAT16, dQk, bs, blocks, batch, perSeq);
    }

    @ParameterizedTest
    @CsvSource({"PLAIN, 1", "PLAIN, 61", "PLAIN, 64", "V32, 1", "V32, 61", "V32, 64", "MODEL1, 1", "MODEL1, 61",
            "MODEL1, 64"})
    void appendsAndDecodesLikeTheHostCache(String layoutName, int bs) {
        TestRandom r = TestRandom.create();
        CacheLayout l = layoutName.equals("V32") ? CacheLayout.V32 : layoutName.equals("MODEL1") ? CacheLayout.MODEL1
                : CacheLayout.PLAIN;
        int dQk = l.isFp8() ? l.dQk() : 576, dV = l.isFp8() ? l.valueDims() : 512;
        int batch = 3, perSeq = 300 / bs + 2, blocks = batch * perSeq;
        String ctx = l + " block " + bs + "; " + r.tag();
        try (KvCache h = host(l, dQk, bs, blocks, batch, perSeq);
             DeviceKvCache d = device(l, dQk, bs, blocks, batch, perSeq)) {
            int[] steps = {1, 4, 2, 3, 1, 64, 1, 2, 90};
            for (int s = 0; s < steps.length; s++) {
                int b = s % 2 == 0 ? batch : 2, n = steps[s];
                INDArray rows = Nd.array(r.normal(b * n * dQk), h.rowType(), b, n, dQk);
                h.append(rows);
                d.append(rows);
                for (int i = 0; i < batch; i++) assertEquals(h.length(i), d.length(i), "length of sequence " + i);
                if (s == 4) {  // forget a sequence mid-way: its blocks go back to the pool
                    h.reset(1);
                    d.reset(1);
                }
            }
            Compare.identical("cache pool", d.download(), ((PagedKvCache) h).data(), ctx);
            for (int sQ : new int[] {1, 2}) {
                int hQ = sQ == 1 ? 128 : 16;
                INDArray q = Nd.array(r.normal(batch * sQ * hQ * dQk), DataType.BFLOAT16, batch, sQ, hQ, dQk);
                INDArray[] want = h.decode(l.isFp8() ? q.castTo(DataType.FLOAT) : q, dV, true, 1 / Math.sqrt(dQk));
                INDArray[] got = d.decode(q, dV, true, 1 / Math.sqrt(dQk));
                Compare.close("out", got[0].castTo(DataType.DOUBLE), Nd.values(want[0]), 1e-2, ctx + " s_q " + sQ);
                Compare.closeAbs("lse", got[1], Nd.values(want[1]), 2e-3, ctx + " s_q " + sQ);
            }
        }
    }

    @Test
    void refusesWhatDoesNotFitAndKeepsItsState() {
        try (DeviceKvCache d = DeviceKvCache.plain(0, DataType.BFLOAT16, 64, 4, 5, 2, 2)) {
            TestRandom r = TestRandom.create();
            d.append(Nd.array(r.normal(2 * 5 * 64), DataType.BFLOAT16, 2, 5, 64));
            MlaException e = assertThrows(MlaException.class,
                    () -> d.append(Nd.array(r.normal(2 * 4 * 64), DataType.BFLOAT16, 2, 4, 64)));
            assertTrue(e.getMessage().contains("DeviceKvCache") && e.getMessage().contains("9 tokens"), e.getMessage());
            assertEquals(5, d.length(0));
            assertEquals(5, d.length(1));
            assertThrows(MlaException.class, () -> d.append(Nd.array(r.normal(32), DataType.BFLOAT16, 1, 1, 32)));
            assertThrows(MlaException.class, () -> d.decode(
                    Nd.array(r.normal(2 * 4 * 64), DataType.FLOAT, 2, 1, 4, 64), 64, true, 0.1));
            assertThrows(MlaException.class, () -> d.decode(
                    Nd.array(r.normal(2 * 4 * 64), DataType.BFLOAT16, 2, 1, 4, 64), 65, true, 0.1));
        }
    }

    @Test
    void isUnusableAfterClose() {
        DeviceKvCache d = DeviceKvCache.plain(0, DataType.BFLOAT16, 64, 4, 3, 2, 2);
        d.close();
        d.close();
        assertThrows(IllegalStateException.class, () -> d.append(Nd.array(new double[64], DataType.BFLOAT16, 1, 1, 64)));
    }
}
