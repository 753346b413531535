package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.ops.Rope;
import org.mla4j.ops.RopeConfig;
import org.mla4j.tests.reference.RopeRef;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** RoPE with and without YaRN (ops.md section 7), against DeepSeek's formulas in float64. */
class RopeTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /** DeepSeek V3: rope dim 64, theta 1e4, YaRN factor 40 over 4096, beta 32 / 1, interleaved. */
    static final RopeConfig V3 = RopeConfig.interleaved(64, 10000).withYarn(40, 4096, 32, 1);
    /** DeepSeek V4 compressed layers: theta 160000, YaRN factor 16 over 65536. */
    static final RopeConfig V4 = RopeConfig.interleaved(64, 160000).withYarn(16, 65536, 32, 1);

    private static void check(TestRandom r, DataType t, long[] shape, RopeConfig c, boolean inverse, int maxPos) {
        int d = (int) shape[shape.length - 1];
        int heads = shape.length == 2 ? 1 : (int) shape[shape.length - 2];
        int n = 1;
        for (long s : shape) n *= (int) s;
        int tokens = n / (d * heads);
        INDArray x = Nd.array(r.normal(n), t, shape);
        int[] pos = Problems.positions(r, tokens, maxPos);
        long[] posShape = shape.length == 4 ? Nd.longs((int) shape[0], (int) shape[1]) : Nd.longs(tokens);
        INDArray out = Nd.nanFilled(t, shape);
        Rope op = new Rope(x, Nd.ints(pos, posShape), c, inverse);
        op.addOutputArgument(out);
        Nd4j.exec(op);
        double[] want = RopeRef.apply(Nd.values(x), tokens, heads, d, pos, c, inverse);
        String ctx = "rope " + t + " " + java.util.Arrays.toString(shape) + " " + c + (inverse ? " inverse" : "")
                + "; " + r.tag();
        Compare.close("out", out, want, Compare.tolerance(t), ctx);
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void allTypesAndRanks(String type) {
        TestRandom r = TestRandom.create();
        DataType t = DataType.valueOf(type);
        check(r, t, Nd.longs(7, 16), RopeConfig.interleaved(8, 10000), false, 1000);
        check(r, t, Nd.longs(5, 3, 24), RopeConfig.halfSplit(16, 10000), true, 1000);
        check(r, t, Nd.longs(2, 4, 3, 80), V3.atOffset(16), false, 200000);
    }

    @Test
    void deepSeekYarnConfigurations() {
        TestRandom r = TestRandom.create();
        for (RopeConfig c : new RopeConfig[] {V3, V4, V3.withYarn(40, 4096, 32, 32)}) {
            for (boolean inverse : new boolean[] {false, true}) {
                check(r, DataType.DOUBLE, Nd.longs(20, 2, 64), c, inverse, 300000);
            }
        }
    }

    @Test
    void frequenciesFollowDeepSeek() {
        // DeepSeek V3 YaRN: low = floor(64 ln(4096 / (32 * 2 pi)) / (2 ln 1e4)) = 10,
        // high = ceil(64 ln(4096 / (1 * 2 pi)) / (2 ln 1e4)) = 23; pairs below 10 keep their
        // frequency, pairs from 23 on are divided by 40, those between are blended linearly.
        double[] f = RopeRef.frequencies(V3);
        for (int i = 0; i < 32; i++) {
            double base = Math.pow(10000, -2.0 * i / 64);
            double ramp = Math.min(1, Math.max(0, (i - 10) / 13.0));
            assertEquals(base * (1 - ramp) + base / 40 * ramp, f[i], 1e-15 * base, "pair " + i);
        }
        // the op agrees: rotating a unit vector in pair i by position 1 turns it by f_i
        double[] x = new double[64];
        for (int i = 0; i < 32; i++) x[2 * i] = 1;
        INDArray out = Nd4j.exec(new Rope(Nd.array(x, DataType.DOUBLE, 1, 64), Nd.ints(new int[] {1}, 1), V3, false))[0];
        double[] o = Nd.values(out);
        for (int i = 0; i < 32; i++) assertEquals(f[i], Math.atan2(o[2 * i + 1], o[2 * i]), 1e-12, "pair " + i);
    }

    @Test
    void inverseUndoesTheRotation() {
        TestRandom r = TestRandom.create();
        INDArray x = Nd.array(r.normal(6 * 2 * 96), DataType.DOUBLE, 6, 2, 96);
        INDArray pos = Nd.ints(Problems.positions(r, 6, 100000), 6);
        INDArray y = Nd4j.exec(new Rope(x, pos, V4, false))[0];
        INDArray back = Nd4j.exec(new Rope(y, pos, V4, true))[0];
        Compare.close("x", back, Nd.values(x), 1e-12, r.tag());
    }

    @Test
    void stridedInputGivesTheSameResult() {
        TestRandom r = TestRandom.create();
        INDArray x = Nd.floats(r.normal(4 * 3 * 16), 4, 3, 16);
        INDArray pos = Nd.ints(new int[] {0, 7, 100, 4096}, 4);
        RopeConfig c = RopeConfig.halfSplit(8, 10000);
        INDArray base = Nd4j.exec(new Rope(x, pos, c, false))[0];
        Compare.identical("out", Nd4j.exec(new Rope(Nd.strided(x), Nd.strided(pos), c, false))[0], base, r.tag());
        Compare.identical("out", Nd4j.exec(new Rope(Nd.offsetView(x), pos, c, false))[0], base, r.tag());
    }

    /**
     * VVPA (v4-attention.md): keys rotated by their positions, queries by theirs, and the output
     * rotated back by the query position depend only on relative positions: shifting every
     * position by the same amount leaves the output unchanged.
     */
    @Test
    void vvpaDependsOnlyOnRelativePositions() {
        TestRandom r = TestRandom.create();
        int s = 6, h = 2, d = 16;
        RopeConfig c = RopeConfig.interleaved(8, 10000);
        INDArray q = Nd.array(r.normal(s * h * d), DataType.DOUBLE, 1, s, h, d);
        INDArray kv = Nd.array(r.normal(s * d), DataType.DOUBLE, 1, s, 1, d);
        INDArray sink = Nd.floats(r.normal(h), h);
        INDArray[] outs = new INDArray[2];
        for (int shift = 0; shift < 2; shift++) {
            int[] p = new int[s];
            for (int i = 0; i < s; i++) p[i] = 3 * i + shift * 12345;
            INDArray pos = Nd.ints(p, 1, s);
            INDArray qr = Nd4j.exec(new Rope(q, pos, c, false))[0];
            INDArray kr = Nd4j.exec(new Rope(kv, pos, c, false))[0];
            outs[shift] = Nd4j.exec(new Attention(qr, kr, null, null, null, sink, pos,
                    new Attention.Options().causal(true).valueFromKey(d).rope(c)))[0];
        }
        Compare.close("shifted output", outs[1], Nd.values(outs[0]), 1e-9, r.tag());
    }
}
