package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.GlobalPoolingLayer;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.PoolingType;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.layers.SelfAttentionLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.layers.MlaV3Block;
import org.mla4j.layers.MlaV3Config;
import org.mla4j.layers.dl4j.MlaSelfAttentionLayer;
import org.mla4j.ops.RopeConfig;
import org.mla4j.tests.reference.RopeRef;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * {@link MlaSelfAttentionLayer}: the forward pass against a plain float64 reference of the MLA
 * formulas (masks and causal included), against the SameDiff {@link MlaV3Block}, the mask
 * convention of DL4J's SelfAttentionLayer, both data formats, float32, builder validation and
 * the JSON form of network configurations.
 */
class LayerMlaSelfAttentionTest {
    private static DataType savedType, savedFloatType;

    @BeforeAll
    static void setUp() {
        Mla4j.install();
        savedType = Nd4j.dataType();
        savedFloatType = Nd4j.defaultFloatingPointType();
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
    }

    @AfterAll
    static void tearDown() {
        Nd4j.setDefaultDataTypes(savedType, savedFloatType);
    }

    static MlaSelfAttentionLayer.Builder small(boolean causal) {
        return new MlaSelfAttentionLayer.Builder().nIn(12).nOut(10).heads(3).qLora(8).kvLora(6)
                .qkNope(4).qkRope(4).vHead(5).causal(causal).ropeTheta(500);
    }

    /** A one-layer network: its output is the layer's output. */
    static MultiLayerNetwork single(Layer layer, DataType type) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().dataType(type).seed(5)
                .weightInit(WeightInit.XAVIER).list().layer(layer).build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    // ---- plain float64 reference ----

    private static double[] vecMat(double[] v, int from, int len, double[][] w) {
        double[] out = new double[w[0].length];
        for (int i = 0; i < len; i++) {
            for (int j = 0; j < out.length; j++) out[j] += v[from + i] * w[i][j];
        }
        return out;
    }

    private static double[] rms(double[] x, int from, int len, double[][] g, double eps) {
        double ms = 0;
        for (int i = 0; i < len; i++) ms += x[from + i] * x[from + i];
        double r = 1.0 / Math.sqrt(ms / len + eps);
        double[] y = new double[len];
        for (int i = 0; i < len; i++) y[i] = x[from + i] * r * g[0][i];
        return y;
    }

    /**
     * The layer's formulas, written out per token: out[b][t] (NaN rows where a query has no
     * unmasked key).
     */
    static double[][][] reference(MlaSelfAttentionLayer c, Map<String, INDArray> p, INDArray xNcw, INDArray mask) {
        int b = (int) xNcw.size(0), s = (int) xNcw.size(2), nIn = (int) c.getNIn(), h = c.getHeads();
        int dQk = c.qkHeadDim(), nope = c.getQkNope(), rope = c.getQkRope(), kv = c.getKvLora(), dv = c.getVHead();
        RopeConfig rc = c.ropeConfig();
        double[] freqs = RopeRef.frequencies(rc);
        double[][] wDkv = p.get("Wdkv").toDoubleMatrix(), wUk = p.get("Wuk").toDoubleMatrix();
        double[][] wUv = p.get("Wuv").toDoubleMatrix(), wO = p.get("Wo").toDoubleMatrix();
        double[][] gKv = p.get("gkv").toDoubleMatrix();
        double[][][] out = new double[b][s][];
        for (int bi = 0; bi < b; bi++) {
            double[][] q = new double[s][], k = new double[s][], v = new double[s][];
            for (int t = 0; t < s; t++) {
                double[] x = new double[nIn];
                for (int i = 0; i < nIn; i++) x[i] = xNcw.getDouble(bi, i, t);
                double[] qf = c.getQLora() > 0
                        ? vecMat(rms(vecMat(x, 0, nIn, p.get("Wdq").toDoubleMatrix()), 0, c.getQLora(),
                                p.get("gq").toDoubleMatrix(), c.getRmsEps()), 0, c.getQLora(), p.get("Wuq").toDoubleMatrix())
                        : vecMat(x, 0, nIn, p.get("Wq").toDoubleMatrix());
                for (int hi = 0; hi < h; hi++) RopeRef.rotate(qf, hi * dQk, dQk, t, false, rc, freqs);
                double[] ckv = vecMat(x, 0, nIn, wDkv);
                double[] lat = rms(ckv, 0, kv, gKv, c.getRmsEps());
                RopeRef.rotate(ckv, kv, rope, t, false, rc, freqs);
                double[] kNope = vecMat(lat, 0, kv, wUk);
                double[] kt = new double[h * dQk];
                for (int hi = 0; hi < h; hi++) {
                    System.arraycopy(kNope, hi * nope, kt, hi * dQk, nope);
                    System.arraycopy(ckv, kv, kt, hi * dQk + nope, rope);
                }
                q[t] = qf;
                k[t] = kt;
                v[t] = vecMat(lat, 0, kv, wUv);
            }
            for (int t = 0; t < s; t++) {
                double[] o = new double[h * dv];
                boolean any = false;
                for (int hi = 0; hi < h; hi++) {
                    double[] sc = new double[s];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < s; j++) {
                        boolean allowed = (!c.isCausal() || j <= t) && (mask == null || mask.getDouble(bi, j) != 0);
                        if (!allowed) {
                            sc[j] = Double.NEGATIVE_INFINITY;
                            continue;
                        }
                        double dot = 0;
                        for (int d = 0; d < dQk; d++) dot += q[t][hi * dQk + d] * k[j][hi * dQk + d];
                        sc[j] = dot * c.softmaxScale();
                        max = Math.max(max, sc[j]);
                    }
                    if (max == Double.NEGATIVE_INFINITY) continue;
                    any = true;
                    double sum = 0;
                    for (int j = 0; j < s; j++) sum += sc[j] == Double.NEGATIVE_INFINITY ? 0 : Math.exp(sc[j] - max);
                    for (int j = 0; j < s; j++) {
                        if (sc[j] == Double.NEGATIVE_INFINITY) continue;
                        double a = Math.exp(sc[j] - max) / sum;
                        for (int d = 0; d < dv; d++) o[hi * dv + d] += a * v[j][hi * dv + d];
                    }
                }
                if (!any) {
                    out[bi][t] = null;
                    continue;
                }
                out[bi][t] = vecMat(o, 0, h * dv, wO);
            }
        }
        return out;
    }

    /** Compares a layer output [b, nOut, s] with the reference at every row the reference defines. */
    static void assertMatchesReference(INDArray actual, double[][][] ref, double tol, String ctx) {
        int compared = 0;
        for (int b = 0; b < ref.length; b++) {
            for (int t = 0; t < ref[b].length; t++) {
                if (ref[b][t] == null) continue;
                double[] got = actual.get(NDArrayIndex.point(b), NDArrayIndex.all(), NDArrayIndex.point(t))
                        .castTo(DataType.DOUBLE).toDoubleVector();
                Compare.close("output[" + b + ", :, " + t + "]", got, ref[b][t], tol, ctx);
                compared++;
            }
        }
        assertTrue(compared > 0, "nothing compared; " + ctx);
    }

    /**
     * Relative tolerance against the float64 reference: mla_attention takes its softmax scale
     * as a float32, so float64 scores carry a relative error of about 1e-8.
     */
    private static final double REF_TOL = 1e-6;

    @Test
    void forwardMatchesReferenceWithMasksAndCausal() {
        TestRandom r = TestRandom.create();
        int b = 3, s = 7;
        INDArray x = Nd4j.create(r.normal(b * 12 * s), new long[] {b, 12, s}, 'c');
        // Full row; interior holes and trailing padding; a masked first step (causal: no keys).
        INDArray mask = Nd4j.createFromArray(new double[][] {
                {1, 1, 1, 1, 1, 1, 1}, {1, 0, 1, 1, 0, 1, 0}, {0, 1, 1, 0, 1, 0, 0}});
        for (boolean causal : new boolean[] {false, true}) {
            for (int qLora : new int[] {8, 0}) {
                MlaSelfAttentionLayer conf = small(causal).qLora(qLora).build();
                MultiLayerNetwork net = single(conf, DataType.DOUBLE);
                MlaSelfAttentionLayer live = (MlaSelfAttentionLayer) net.getLayer(0).conf().getLayer();
                Map<String, INDArray> p = net.getLayer(0).paramTable();
                String ctx = "causal=" + causal + ", qLora=" + qLora + ", " + r.tag();
                assertMatchesReference(net.output(x), reference(live, p, x, null), REF_TOL, ctx + ", no mask");
                INDArray masked = net.output(x, false, mask, null);
                assertMatchesReference(masked, reference(live, p, x, mask), REF_TOL, ctx + ", mask");
                Compare.identical("all-ones mask", net.output(x, false, Nd4j.ones(DataType.DOUBLE, b, s), null),
                        net.output(x), ctx);
            }
        }
    }

    @Test
    void maskConventionMatchesBuiltInSelfAttentionLayer() {
        int b = 2, s = 6, n = 6;
        INDArray mask = Nd4j.createFromArray(new double[][] {{1, 1, 0, 1, 1, 0}, {1, 1, 1, 1, 0, 0}});
        Nd4j.getRandom().setSeed(17);
        INDArray x = Nd4j.randn(DataType.DOUBLE, b, n, s);
        // The same inputs with different values at every masked timestep.
        INDArray changed = x.dup();
        for (int i = 0; i < b; i++) {
            for (int t = 0; t < s; t++) {
                if (mask.getDouble(i, t) == 0) {
                    changed.get(NDArrayIndex.point(i), NDArrayIndex.all(), NDArrayIndex.point(t)).addi(3.0);
                }
            }
        }
        MultiLayerNetwork builtIn = single(new SelfAttentionLayer.Builder().nIn(n).nOut(n).nHeads(2)
                .projectInput(true).build(), DataType.DOUBLE);
        MultiLayerNetwork mla = single(new MlaSelfAttentionLayer.Builder().nIn(n).nOut(n).heads(2).kvLora(4)
                .qkNope(2).qkRope(2).vHead(3).build(), DataType.DOUBLE);
        for (MultiLayerNetwork net : new MultiLayerNetwork[] {builtIn, mla}) {
            String which = net.getLayer(0).conf().getLayer().getClass().getSimpleName();
            INDArray y = net.output(x, false, mask, null), y2 = net.output(changed, false, mask, null);
            for (int i = 0; i < b; i++) {
                for (int t = 0; t < s; t++) {
                    INDArray col = y.get(NDArrayIndex.point(i), NDArrayIndex.all(), NDArrayIndex.point(t));
                    INDArray col2 = y2.get(NDArrayIndex.point(i), NDArrayIndex.all(), NDArrayIndex.point(t));
                    if (mask.getDouble(i, t) != 0) {
                        // Masked keys are not attended: changing them leaves unmasked outputs alone.
                        assertTrue(col.equalsWithEps(col2, 1e-12), which + ": output at unmasked (" + i + ", " + t
                                + ") depends on masked timesteps");
                    } else {
                        // Masked timesteps still get an output (their own query over unmasked keys).
                        assertTrue(col.norm2Number().doubleValue() > 1e-6, which + ": output at masked ("
                                + i + ", " + t + ") is zero");
                    }
                }
            }
        }
    }

    @Test
    void matchesTheSameDiffBlockWithTheSameWeights() {
        int b = 2, s = 9;
        MlaV3Config cfg = new MlaV3Config(16, 2, 8, 6, 4, 4, 5, RopeConfig.interleaved(4, 10000), 1e-6);
        SameDiff sd = SameDiff.create();
        SDVariable xv = sd.placeHolder("x", DataType.DOUBLE, -1, -1, cfg.dModel);
        SDVariable pos = sd.placeHolder("pos", DataType.INT, -1, -1);
        MlaV3Block block = new MlaV3Block(sd, "attn", cfg, DataType.DOUBLE, 3);
        SDVariable y = block.forward(xv, pos).rename("y");

        MultiLayerNetwork net = single(new MlaSelfAttentionLayer.Builder().nIn(cfg.dModel).nOut(cfg.dModel)
                .heads(cfg.heads).qLora(cfg.qLora).kvLora(cfg.kvLora).qkNope(cfg.qkNope).qkRope(cfg.qkRope)
                .vHead(cfg.vHead).causal(true).ropeTheta(10000).rmsEps(cfg.rmsEps).build(), DataType.DOUBLE);
        Map<String, INDArray> p = net.getLayer(0).paramTable();
        p.get("Wdq").assign(block.weight("W_dq"));
        p.get("gq").assign(block.weight("g_q").reshape(1, cfg.qLora));
        INDArray nope = block.weight("W_uq_nope"), rope = block.weight("W_uq_rope");
        for (int h = 0; h < cfg.heads; h++) {
            int at = h * cfg.dQk();
            p.get("Wuq").get(NDArrayIndex.all(), NDArrayIndex.interval(at, at + cfg.qkNope))
                    .assign(nope.get(NDArrayIndex.all(), NDArrayIndex.interval(h * cfg.qkNope, (h + 1) * cfg.qkNope)));
            p.get("Wuq").get(NDArrayIndex.all(), NDArrayIndex.interval(at + cfg.qkNope, at + cfg.dQk()))
                    .assign(rope.get(NDArrayIndex.all(), NDArrayIndex.interval(h * cfg.qkRope, (h + 1) * cfg.qkRope)));
        }
        p.get("Wdkv").assign(Nd4j.concat(1, block.weight("W_dkv"), block.weight("W_kr")));
        p.get("gkv").assign(block.weight("g_kv").reshape(1, cfg.kvLora));
        p.get("Wuk").assign(block.weight("W_uk"));
        p.get("Wuv").assign(block.weight("W_uv"));
        p.get("Wo").assign(block.weight("W_o"));

        Nd4j.getRandom().setSeed(4);
        INDArray x = Nd4j.randn(DataType.DOUBLE, b, s, cfg.dModel);
        INDArray positions = Nd4j.arange(0, s).castTo(DataType.INT).reshape(1, s).repeat(0, b);
        INDArray want = sd.output(Map.of("x", x, "pos", positions), "y").get("y");
        INDArray got = net.output(x.permute(0, 2, 1).dup('c')).permute(0, 2, 1);
        double err = Compare.relErr(Nd.values(got), Nd.values(want));
        assertTrue(err < 1e-12, "DL4J layer vs MlaV3Block: relative error " + err);
    }

    @Test
    void nwcFormatGivesTheSameOutputAsNcw() {
        MultiLayerNetwork ncw = single(small(true).build(), DataType.DOUBLE);
        MultiLayerNetwork nwc = single(small(true).dataFormat(RNNFormat.NWC).build(), DataType.DOUBLE);
        nwc.setParams(ncw.params());
        Nd4j.getRandom().setSeed(9);
        INDArray x = Nd4j.randn(DataType.DOUBLE, 2, 12, 5);
        INDArray mask = Nd4j.createFromArray(new double[][] {{1, 1, 1, 0, 0}, {1, 0, 1, 1, 1}});
        INDArray a = ncw.output(x, false, mask, null);
        INDArray c = nwc.output(x.permute(0, 2, 1).dup('c'), false, mask, null);
        assertEquals(3, c.rank());
        assertTrue(a.equalsWithEps(c.permute(0, 2, 1), 1e-14), "NWC output differs from NCW");
    }

    @Test
    void float32NetworkAgreesWithFloat64() {
        MultiLayerNetwork d = single(small(true).build(), DataType.DOUBLE);
        MultiLayerNetwork f = single(small(true).build(), DataType.FLOAT);
        f.setParams(d.params().castTo(DataType.FLOAT));
        Nd4j.getRandom().setSeed(10);
        INDArray x = Nd4j.randn(DataType.DOUBLE, 2, 12, 6);
        INDArray mask = Nd4j.createFromArray(new double[][] {{1, 1, 1, 1, 0, 0}, {1, 0, 1, 1, 1, 1}});
        INDArray want = d.output(x, false, mask, null);
        INDArray got = f.output(x.castTo(DataType.FLOAT), false, mask.castTo(DataType.FLOAT), null);
        assertEquals(DataType.FLOAT, got.dataType());
        double err = Compare.relErr(Nd.values(got), Nd.values(want));
        assertTrue(err < 1e-5, "float32 vs float64 relative error " + err);
    }

    @Test
    void builderRejectsBadSizesWithClearMessages() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new MlaSelfAttentionLayer.Builder().nIn(8).nOut(8).kvLora(4).qkNope(2).qkRope(2).vHead(2).build());
        assertTrue(e.getMessage().contains("heads"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> small(false).qkRope(3).build());
        assertTrue(e.getMessage().contains("qkRope"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> small(false).nOut(0).build());
        assertTrue(e.getMessage().contains("nOut"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> small(false).yarn(4, 0, 32, 1).build());
        assertTrue(e.getMessage().contains("YaRN"), e.getMessage());
    }

    @Test
    void inputOfTheWrongSizeIsRejected() {
        MultiLayerNetwork net = single(small(false).build(), DataType.DOUBLE);
        Exception e = assertThrows(Exception.class, () -> net.output(Nd4j.zeros(DataType.DOUBLE, 2, 11, 4)));
        assertTrue(String.valueOf(e.getMessage()).contains("[batch, 12, timesteps]"), e.getMessage());
    }

    @Test
    void multiLayerConfigurationJsonRoundTrip() {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().dataType(DataType.FLOAT).updater(new Adam(1e-3))
                .list()
                .layer(small(true).yarn(8, 64, 32, 1).rmsEps(1e-5).name("mla").l2(1e-4).build())
                .layer(new RnnOutputLayer.Builder(LossFunction.MSE).activation(Activation.IDENTITY).nOut(2).build())
                .setInputType(InputType.recurrent(12))
                .build();
        String json = conf.toJson();
        MultiLayerConfiguration back = MultiLayerConfiguration.fromJson(json);
        assertEquals(conf, back);
        assertEquals(json, back.toJson());
        MlaSelfAttentionLayer l = (MlaSelfAttentionLayer) back.getConf(0).getLayer();
        assertEquals(3, l.getHeads());
        assertEquals(8, l.getQLora());
        assertEquals(5, l.getVHead());
        assertTrue(l.isCausal());
        assertEquals(8.0, l.getYarnFactor());
        assertEquals(64, l.getYarnOriginalMaxPosition());
        assertEquals(1e-5, l.getRmsEps());
        assertEquals(Activation.IDENTITY.getActivationFunction(), l.getActivationFn());
    }

    @Test
    void computationGraphConfigurationJsonRoundTrip() {
        ComputationGraphConfiguration conf = new NeuralNetConfiguration.Builder().dataType(DataType.FLOAT)
                .graphBuilder()
                .addInputs("in")
                .addLayer("mla", small(false).qLora(0).dataFormat(RNNFormat.NCW).build(), "in")
                .addLayer("pool", new GlobalPoolingLayer.Builder(PoolingType.MAX).build(), "mla")
                .addLayer("out", new OutputLayer.Builder(LossFunction.MCXENT).activation(Activation.SOFTMAX).nOut(2).build(), "pool")
                .setOutputs("out")
                .setInputTypes(InputType.recurrent(12))
                .build();
        String json = conf.toJson();
        ComputationGraphConfiguration back = ComputationGraphConfiguration.fromJson(json);
        assertEquals(conf, back);
        assertEquals(json, back.toJson());
        MlaSelfAttentionLayer l = (MlaSelfAttentionLayer)
                ((org.deeplearning4j.nn.conf.graph.LayerVertex) back.getVertices().get("mla")).getLayerConf().getLayer();
        assertEquals(0, l.getQLora());
        assertEquals(12, l.getNIn());
        assertNotEquals(l, small(true).qLora(0).build());
    }
}
