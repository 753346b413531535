package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.mla4j.Mla4j;
import org.mla4j.MlaException;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.cache.SparseKeys;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.RopeConfig;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.CacheFill;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Sparse decode from the host {@link PagedKvCache} (ops.md section 2) against the float64
 * reference reading the cache's own bytes: slots from token positions, a second cache as the
 * extra key set, lengths, sink and VVPA, PLAIN and FP8 layouts.
 */
class CacheSparseDecodeTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    static PagedKvCache cache(CacheLayout l, DataType plainType, int dQk, int bs, int batch, int perSeq) {
        return l.isFp8() ? PagedKvCache.fp8(l, bs, batch * perSeq, batch, perSeq)
                : PagedKvCache.plain(plainType, dQk, bs, batch * perSeq, batch, perSeq);
    }

    /** The reference's view of a host cache and the slots that select from it. */
    static Ref.KeySet refKeys(PagedKvCache c, int[] slots, int topk, int[] lengths) {
        INDArray data = c.data();
        Ref.KeySet k = new Ref.KeySet();
        int blocks = (int) data.size(0);
        k.cache = c.layout().isFp8() ? Ref.fp8(Nd.intValues(data), Caches.ref(c.layout()), blocks, c.blockSize())
                : Ref.plain(Nd.values(data), blocks, c.blockSize(), 1, c.dQk());
        k.indices = slots;
        k.topk = topk;
        k.topkLength = lengths;
        return k;
    }

    @Test
    void slotsFollowTheBlockTable() {
        TestRandom r = TestRandom.create();
        try (PagedKvCache c = PagedKvCache.plain(DataType.FLOAT, 8, 3, 12, 3, 4)) {
            // rows whose first value names (sequence, position): what a slot holds says where it came from
            for (int step = 0; step < 4; step++) {
                int b = step % 2 == 0 ? 3 : 2, n = step + 1;
                double[] v = new double[b * n * 8];
                for (int i = 0; i < b; i++)
                    for (int j = 0; j < n; j++) v[(i * n + j) * 8] = 1000 * i + c.length(i) + j;
                c.append(Nd.floats(v, b, n, 8));
            }
            int[] pos = CacheFill.positions(r, c, 3, 2, 5);
            int[] got = Nd.intValues(c.slots(Nd.ints(pos, 3, 2, 5)));
            assertArrayEquals(CacheFill.slots(c, c.blockTable(), pos, 3), got);
            INDArray rows = c.data().reshape(-1, 8);
            for (int k = 0; k < pos.length; k++) {
                int seq = k / 10;
                if (got[k] < 0) {
                    assertEquals(true, pos[k] < 0 || pos[k] >= c.length(seq), "position " + pos[k] + " of sequence " + seq);
                } else {
                    assertEquals(1000.0 * seq + pos[k], rows.getDouble(got[k], 0), "slot " + got[k] + "; " + r.tag());
                }
            }
            Compare.rejects("PagedKvCache.slots", "positions", () -> c.slots(Nd4j.zeros(DataType.FLOAT, 3, 2)));
            Compare.rejects("PagedKvCache.slots", "positions", () -> c.slots(Nd.ints(new int[4 * 2], 4, 2)));
        }
    }

    @ParameterizedTest
    @CsvSource({"PLAIN, FLOAT, 4", "PLAIN, BFLOAT16, 3", "V32_SMALL, FLOAT, 4", "V32_SMALL, BFLOAT16, 5",
            "MODEL1_SMALL, FLOAT, 2", "MODEL1_SMALL, HALF, 4"})
    void sparseDecodeMatchesTheReference(String layoutName, String qType, int bs) {
        TestRandom r = TestRandom.create();
        CacheLayout l = layoutName.equals("V32_SMALL") ? Caches.V32_SMALL
                : layoutName.equals("MODEL1_SMALL") ? Caches.MODEL1_SMALL : CacheLayout.PLAIN;
        DataType type = DataType.valueOf(qType);
        int dQk = l.isFp8() ? l.dQk() : 24, dV = l.isFp8() ? l.valueDims() : 16;
        int batch = 3, sQ = 2, hQ = 5, topk = 9, extraTopk = 4;
        try (PagedKvCache keys = cache(l, type, dQk, bs, batch, 8); PagedKvCache extra = cache(l, type, dQk, 2, batch, 6)) {
            CacheFill.fill(r, new int[] {3, 1, 5, 2, 1}, keys);
            CacheFill.fill(r, new int[] {2, 1, 3}, extra);
            int[] pos = CacheFill.positions(r, keys, batch, sQ, topk);
            int[] extraPos = CacheFill.positions(r, extra, batch, sQ, extraTopk);
            int[] slots = CacheFill.slots(keys, keys.blockTable(), pos, batch);
            int[] extraSlots = CacheFill.slots(extra, extra.blockTable(), extraPos, batch);
            assertArrayEquals(slots, Nd.intValues(keys.slots(Nd.ints(pos, batch, sQ, topk))));
            int[] len = {topk, 0, 6}, extraLen = {1, extraTopk + 2, 3};
            double[] sink = Problems.sink(r, Sink.MIXED, hQ);
            RopeConfig rope = Problems.rope(r, 8);
            int[] outPos = Problems.positions(r, batch * sQ, 5000);
            double scale = Problems.defaultScale(dQk);
            INDArray q = Nd.array(r.normal(batch * sQ * hQ * dQk), type, batch, sQ, hQ, dQk);

            INDArray[] got = keys.sparseDecode(q, dV, scale, Nd.ints(slots, batch, sQ, topk), Nd.ints(len, batch),
                    new SparseKeys(extra, Nd.ints(extraSlots, batch, sQ, extraTopk), Nd.ints(extraLen, batch)),
                    Nd.floats(sink, hQ), Nd.ints(outPos, batch, sQ), rope);

            Ref.SparseDecode d = new Ref.SparseDecode();
            d.b = batch;
            d.sQ = sQ;
            d.hQ = hQ;
            d.dQk = dQk;
            d.dV = dV;
            d.q = Nd.values(q);
            d.keys = refKeys(keys, slots, topk, len);
            d.extra = refKeys(extra, extraSlots, extraTopk, extraLen);
            d.scale = scale;
            d.sink = Problems.asFloat(sink);
            d.positions = outPos;
            d.rope = rope;
            Ref.Result want = Ref.sparseDecode(d);
            String ctx = l + " q " + type + " block " + bs + " " + rope + "; " + r.tag();
            Compare.output("out", got[0], want.out, Compare.tolerance(type), ctx);
            Compare.closeAbs("lse", got[1], want.lse, Compare.LSE_TOL, ctx);
        }
    }

    /** The short form: one key set, no sink, no rotation, every index counting. */
    @Test
    void oneKeySetAlone() {
        TestRandom r = TestRandom.create();
        try (PagedKvCache c = cache(CacheLayout.PLAIN, DataType.DOUBLE, 16, 4, 2, 5)) {
            CacheFill.fill(r, new int[] {6, 3, 4}, c);
            int[] pos = CacheFill.positions(r, c, 2, 1, 6);
            int[] slots = CacheFill.slots(c, c.blockTable(), pos, 2);
            INDArray q = Nd.array(r.normal(2 * 3 * 16), DataType.DOUBLE, 2, 1, 3, 16);
            INDArray[] got = c.sparseDecode(q, 16, 0.3, Nd.ints(slots, 2, 1, 6), null);
            Ref.SparseDecode d = new Ref.SparseDecode();
            d.b = 2;
            d.sQ = 1;
            d.hQ = 3;
            d.dQk = 16;
            d.dV = 16;
            d.q = Nd.values(q);
            d.keys = refKeys(c, slots, 6, null);
            d.scale = (float) 0.3;
            Ref.Result want = Ref.sparseDecode(d);
            Compare.output("out", got[0], want.out, 1e-5, r.tag());
            Compare.closeAbs("lse", got[1], want.lse, Compare.LSE_TOL, r.tag());
        }
    }

    @Test
    void badArgumentsAreNamed() {
        TestRandom r = TestRandom.create();
        try (PagedKvCache c = cache(CacheLayout.PLAIN, DataType.FLOAT, 16, 4, 2, 5)) {
            CacheFill.fill(r, new int[] {3}, c);
            INDArray q = Nd.floats(r.normal(2 * 2 * 16), 2, 1, 2, 16);
            Compare.rejects("mla_sparse_decode", "indices",
                    () -> c.sparseDecode(q, 16, 0, Nd4j.zeros(DataType.FLOAT, 2, 1, 3), null));
            Compare.rejects("mla_sparse_decode", "topkLength",
                    () -> c.sparseDecode(q, 16, 0, Nd.ints(new int[6], 2, 1, 3), Nd.ints(new int[3], 3)));
            MlaException e = org.junit.jupiter.api.Assertions.assertThrows(MlaException.class,
                    () -> new SparseKeys(c, null));
            assertEquals(true, e.getMessage().contains("SparseKeys"), e.getMessage());
        }
    }
}
