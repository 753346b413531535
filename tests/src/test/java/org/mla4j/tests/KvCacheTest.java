package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.KvAppend;
import org.mla4j.ops.KvDequantize;
import org.mla4j.ops.KvQuantize;
import org.mla4j.tests.reference.CacheRef;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * KV cache ops (ops.md section 5): FP8 quantise / dequantise in the V32 and MODEL1 layouts,
 * checked byte by byte against an encoder written from the layout description, and append
 * into PLAIN and FP8 paged caches.
 */
class KvCacheTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    private static final CacheLayout[] LAYOUTS = {CacheLayout.V32, CacheLayout.MODEL1, Caches.V32_SMALL, Caches.MODEL1_SMALL};

    @Test
    void blockBytesFollowTheLayoutDescription() {
        // ops.md: V32 is 656 bytes a token; MODEL1 rows of 576 bytes, scale rows of 8, block padded to 576.
        assertEquals(656, CacheLayout.V32.blockBytes(1));
        assertEquals(656L * 64, CacheLayout.V32.blockBytes(64));
        assertEquals(576 * 2, CacheLayout.MODEL1.blockBytes(1), "576 + 8 bytes pad up to two rows of 576");
        assertEquals(576L * 65, CacheLayout.MODEL1.blockBytes(64), "64 * (576 + 8) = 37376 bytes pad to 65 rows");
        for (CacheLayout l : LAYOUTS) {
            for (int bs : new int[] {1, 2, 61, 64, 256}) {
                assertEquals(Caches.ref(l).blockBytes(bs), l.blockBytes(bs), l + " block of " + bs);
            }
        }
    }

    /** Hand-derived bytes of a tiny V32 token (d_nope 8, d_rope 2, tile 4). */
    @Test
    void v32TokenBytesByHand() {
        CacheLayout l = CacheLayout.v32(8, 2, 4);
        INDArray kv = Nd.floats(new double[] {1, 2, 3, 4, -0.5, 0.25, 0, 0.125, 1.0, -2.0}, 1, 1, 10);
        int[] got = Nd.intValues(Nd4j.exec(new KvQuantize(kv, l))[0]);
        int[] want = {
            // tile 0: amax 4 -> scale 2^-6; 1..4 / 2^-6 = 64, 128, 192, 256
            0x68, 0x70, 0x74, 0x78,
            // tile 1: amax 0.5 -> scale 2^-9; -256, 128, 0, 64
            0xf8, 0x70, 0x00, 0x68,
            // float32 scales, little-endian: 2^-6 = 0x3c800000, 2^-9 = 0x3b000000
            0x00, 0x00, 0x80, 0x3c, 0x00, 0x00, 0x00, 0x3b,
            // bfloat16 rope part: 1.0 = 0x3f80, -2.0 = 0xc000
            0x80, 0x3f, 0x00, 0xc0};
        assertArrayEquals(want, got);
    }

    /** Hand-derived bytes of a tiny MODEL1 block (d_nope 8, d_rope 2, tile 4, 2 tokens). */
    @Test
    void model1BlockBytesByHand() {
        CacheLayout l = CacheLayout.model1(8, 2, 4);
        INDArray kv = Nd.floats(new double[] {
            1, 2, 3, 4, -0.5, 0.25, 0, 0.125, 1.0, -2.0,
            0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0.0}, 1, 2, 10);
        INDArray out = Nd.bytes(filled(48, 0xab), 1, 48);
        KvQuantize op = new KvQuantize(kv, l);
        op.addOutputArgument(out);
        Nd4j.exec(op);
        int[] want = {
            // data rows: 8 e4m3 bytes then 2 bfloat16
            0x68, 0x70, 0x74, 0x78, 0xf8, 0x70, 0x00, 0x68, 0x80, 0x3f, 0x00, 0xc0,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00,
            // scale rows (UE8M0, padded to 8): 2^-6 = 121, 2^-9 = 118; an all-zero tile gets 2^-13 = 114
            0x79, 0x76, 0, 0, 0, 0, 0, 0,
            0x72, 0x72, 0, 0, 0, 0, 0, 0,
            // 2 * (12 + 8) = 40 bytes, padded with zeros to 48 (a multiple of the 12-byte row)
            0, 0, 0, 0, 0, 0, 0, 0};
        assertArrayEquals(want, Nd.intValues(out));
    }

    private static int[] filled(int n, int v) {
        int[] a = new int[n];
        java.util.Arrays.fill(a, v);
        return a;
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void quantizeMatchesTheLayoutEncoder(String type) {
        DataType t = DataType.valueOf(type);
        TestRandom r = TestRandom.create();
        for (CacheLayout l : LAYOUTS) {
            CacheRef c = Caches.ref(l);
            for (int bs : new int[] {1, 2, 61}) {
                if (l.dQk() > 100 && bs > 2) continue;
                int blocks = 2;
                double[] raw = r.normal(blocks * bs * c.dQk(), 3.0);
                // some tiles far from unit magnitude, one tile all zero
                for (int i = 0; i < c.tile; i++) raw[i] = 0;
                for (int i = c.tile; i < 2 * c.tile && 2 * c.tile <= c.dNope; i++) raw[i] *= 1e-3;
                INDArray kv = Nd.array(raw, t, blocks, bs, c.dQk());
                double[] x = Nd.values(kv);
                INDArray out = Nd.bytes(filled((int) (blocks * c.blockBytes(bs)), 0xab), blocks, c.blockBytes(bs));
                KvQuantize op = new KvQuantize(kv, l);
                op.addOutputArgument(out);
                Nd4j.exec(op);
                int[] got = Nd.intValues(out);
                int[] want = c.quantize(x, blocks, bs);
                String ctx = l + " bs=" + bs + " " + t + " " + r.tag();
                compareBytes(got, want, ctx);
            }
        }
    }

    /** Every byte equal (data, scales, bfloat16 part and padding). */
    private static void compareBytes(int[] got, int[] want, String ctx) {
        assertEquals(want.length, got.length, ctx);
        for (int i = 0; i < got.length; i++) {
            if (got[i] != want[i]) {
                fail(String.format("byte %d: got 0x%02x, expected 0x%02x; %s", i, got[i], want[i], ctx));
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"V32", "MODEL1", "V32_SMALL", "MODEL1_SMALL"})
    void roundTripWithinTheFp8Bound(String name) {
        CacheLayout l = layout(name);
        CacheRef c = Caches.ref(l);
        TestRandom r = TestRandom.create();
        int blocks = 3, bs = l.dQk() > 100 ? 4 : 61;
        double[] x = Nd.roundTo(r.normal(blocks * bs * c.dQk(), 2.0), DataType.FLOAT);
        for (int i = 0; i < c.tile; i++) x[i] *= 1e-6; // a tile that hits the 1e-4 scale floor
        INDArray kv = Nd.floats(x, blocks, bs, c.dQk());
        INDArray bytes = Nd4j.exec(new KvQuantize(kv, l))[0];
        for (DataType t : Nd.FLOAT_TYPES) {
            INDArray poisoned = Nd.nanFilled(t, blocks, bs, c.dQk());
            KvDequantize op = new KvDequantize(bytes, l, bs, t);
            op.addOutputArgument(poisoned);
            Nd4j.exec(op);
            double[] back = Nd.values(poisoned);
            int[] b = Nd.intValues(bytes);
            String ctx = l + " " + t + " " + r.tag();
            for (int tok = 0; tok < blocks * bs; tok++) {
                double[] mine = c.token(b, tok / bs, tok % bs, bs);
                for (int i = 0; i < c.dQk(); i++) {
                    int at = tok * c.dQk() + i;
                    double v = x[at], deq = back[at];
                    // Bound of the round trip, per element:
                    //  e4m3 part: round to nearest of a 3-bit mantissa at x's binade after the
                    //  power-of-two tile scale s: |x - deq| <= |x| / 16 + s * 2^-10 (the second
                    //  term covers the subnormal range, spacing s * 2^-9);
                    //  bfloat16 part: |x - deq| <= |x| * 2^-8.
                    double bound = i < c.dNope
                            ? Math.abs(v) / 16 + c.scale(b, tok / bs, tok % bs, bs, i / c.tile) * Math.pow(2, -10)
                            : Math.abs(v) * Math.pow(2, -8);
                    // the output type adds its own rounding
                    bound += Math.abs(v) * (t == DataType.BFLOAT16 ? Math.pow(2, -8) : t == DataType.HALF ? Math.pow(2, -11) : 0);
                    if (!(Math.abs(v - deq) <= bound)) {
                        fail("token " + tok + " dim " + i + ": x " + v + " dequantised " + deq + " (bound " + bound + "); " + ctx);
                    }
                    if (t == DataType.FLOAT || t == DataType.DOUBLE) {
                        assertEquals(mine[i], deq, 0.0, "dequantised value differs from the layout decoder at token "
                                + tok + " dim " + i + "; " + ctx);
                    }
                }
            }
        }
    }

    @Test
    void dequantizeReadsBytesWrittenByTheLayoutEncoder() {
        TestRandom r = TestRandom.create();
        for (CacheLayout l : LAYOUTS) {
            CacheRef c = Caches.ref(l);
            int blocks = 2, bs = 3;
            int[] bytes = c.quantize(r.normal(blocks * bs * c.dQk(), 50.0), blocks, bs);
            INDArray out = Nd4j.exec(new KvDequantize(Nd.bytes(bytes, blocks, c.blockBytes(bs)), l, bs, DataType.DOUBLE))[0];
            double[] got = Nd.values(out);
            for (int tok = 0; tok < blocks * bs; tok++) {
                double[] want = c.token(bytes, tok / bs, tok % bs, bs);
                for (int i = 0; i < c.dQk(); i++) {
                    assertEquals(want[i], got[tok * c.dQk() + i], 0.0, l + " token " + tok + " dim " + i + "; " + r.tag());
                }
            }
        }
    }

    private static CacheLayout layout(String name) {
        switch (name) {
            case "V32": return CacheLayout.V32;
            case "MODEL1": return CacheLayout.MODEL1;
            case "V32_SMALL": return Caches.V32_SMALL;
            case "MODEL1_SMALL": return Caches.MODEL1_SMALL;
            default: throw new IllegalArgumentException(name);
        }
    }

    // ---- append ---------------------------------------------------------------------------------

    /** A random paged layout: block tables with distinct blocks per request. */
    private static int[] blockTable(TestRandom r, int b, int maxBlocks, int numBlocks) {
        int[] perm = r.permutation(numBlocks);
        int[] table = new int[b * maxBlocks];
        for (int i = 0; i < table.length; i++) table[i] = perm[i];
        return table;
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 61, 256})
    void appendPlain(int bs) {
        TestRandom r = TestRandom.create();
        for (DataType t : Nd.FLOAT_TYPES) {
            for (int hKv : new int[] {1, 2}) {
                int b = 3, d = 8, nNew = bs == 1 ? 3 : 2;
                int maxBlocks = (5 + nNew + bs - 1) / bs + 1, numBlocks = b * maxBlocks + 1;
                int[] table = blockTable(r, b, maxBlocks, numBlocks);
                int[] seqlens = new int[b];
                for (int i = 0; i < b; i++) seqlens[i] = r.between(0, maxBlocks * bs - nNew);
                double[] before = r.normal(numBlocks * bs * hKv * d);
                INDArray cache = Nd.array(before, t, numBlocks, bs, hKv, d);
                double[] cacheBefore = Nd.values(cache);
                // new tokens in float32 (a different type from the cache is allowed)
                double[] fresh = r.normal(b * nNew * hKv * d);
                INDArray newKv = Nd.floats(fresh, b, nNew, hKv * d);
                Nd4j.exec(KvAppend.inPlace(cache, Nd.ints(table, b, maxBlocks), Nd.ints(seqlens, b), newKv, CacheLayout.PLAIN, 0));
                double[] want = cacheBefore.clone();
                double[] freshT = Nd.roundTo(Nd.roundTo(fresh, DataType.FLOAT), t);
                for (int i = 0; i < b; i++)
                    for (int j = 0; j < nNew; j++) {
                        int pos = seqlens[i] + j;
                        int slot = table[i * maxBlocks + pos / bs] * bs + pos % bs;
                        System.arraycopy(freshT, (i * nNew + j) * hKv * d, want, slot * hKv * d, hKv * d);
                    }
                assertArrayEquals(want, Nd.values(cache), 0.0, "PLAIN " + t + " h_kv " + hKv + " bs " + bs + "; " + r.tag());
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 61})
    void appendFp8(int bs) {
        TestRandom r = TestRandom.create();
        for (CacheLayout l : new CacheLayout[] {Caches.V32_SMALL, Caches.MODEL1_SMALL, CacheLayout.MODEL1}) {
            CacheRef c = Caches.ref(l);
            int b = 2, nNew = 3;
            int maxBlocks = (4 + nNew + bs - 1) / bs + 1, numBlocks = b * maxBlocks;
            int[] table = blockTable(r, b, maxBlocks, numBlocks);
            int[] seqlens = {r.between(0, maxBlocks * bs - nNew), r.between(0, maxBlocks * bs - nNew)};
            int[] bytes = c.quantize(r.normal(numBlocks * bs * c.dQk()), numBlocks, bs);
            INDArray cache = Nd.bytes(bytes, numBlocks, c.blockBytes(bs));
            double[] fresh = Nd.roundTo(r.normal(b * nNew * c.dQk(), 4.0), DataType.BFLOAT16);
            INDArray newKv = Nd.array(fresh, DataType.BFLOAT16, b, nNew, c.dQk());
            Nd4j.exec(KvAppend.inPlace(cache, Nd.ints(table, b, maxBlocks), Nd.ints(seqlens, b), newKv, l, bs));
            int[] want = bytes.clone();
            for (int i = 0; i < b; i++)
                for (int j = 0; j < nNew; j++) {
                    int pos = seqlens[i] + j;
                    double[] row = java.util.Arrays.copyOfRange(fresh, (i * nNew + j) * c.dQk(), (i * nNew + j + 1) * c.dQk());
                    c.writeToken(want, table[i * maxBlocks + pos / bs], pos % bs, bs, row);
                }
            int[] got = Nd.intValues(cache);
            String ctx = l + " bs " + bs + "; " + r.tag();
            compareBytes(got, want, ctx);
        }
    }

    @Test
    void appendNothingLeavesTheCacheAsItWas() {
        TestRandom r = TestRandom.create();
        double[] v = r.normal(2 * 4 * 8);
        INDArray cache = Nd.floats(v, 2, 4, 1, 8);
        INDArray empty = Nd4j.create(DataType.FLOAT, 1, 0, 8);
        Nd4j.exec(KvAppend.inPlace(cache, Nd.ints(new int[] {0, 1}, 1, 2), Nd.ints(new int[] {3}, 1), empty, CacheLayout.PLAIN, 0));
        assertArrayEquals(Nd.roundTo(v, DataType.FLOAT), Nd.values(cache), 0.0, r.tag());
    }

    @Test
    void appendFromAStridedView() {
        TestRandom r = TestRandom.create();
        double[] fresh = r.normal(2 * 3 * 16);
        INDArray a = Nd.floats(r.normal(4 * 4 * 16), 4, 4, 1, 16);
        INDArray b = a.dup();
        INDArray table = Nd.ints(new int[] {2, 0, 1, 3}, 2, 2);
        INDArray seqlens = Nd.ints(new int[] {1, 5}, 2);
        INDArray kv = Nd.floats(fresh, 2, 3, 16);
        Nd4j.exec(KvAppend.inPlace(a, table, seqlens, kv, CacheLayout.PLAIN, 0));
        Nd4j.exec(KvAppend.inPlace(b, table, seqlens, Nd.strided(kv), CacheLayout.PLAIN, 0));
        Compare.identical("cache", b, a, r.tag());
    }
}
