package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.deeplearning4j.gradientcheck.GradientCheckUtil;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.samediff.SDLayerParams;
import org.deeplearning4j.nn.conf.layers.samediff.SameDiffLayer;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Measures how DL4J 1.0.0-M2.1's {@code SameDiffLayer} scales gradients, with built-in ops
 * only: a {@code tanh(x W + b)} SameDiffLayer against a {@code DenseLayer} with the same
 * weights, followed by the same output layer. The reference is a central finite difference
 * of the network score.
 *
 * <p>Observed (and asserted here, so that a DL4J upgrade that changes it shows up): the
 * SameDiffLayer's parameter gradients and its gradient with respect to its input are exactly
 * twice the true ones, with or without mla4j installed; the layers above it get correct
 * gradients. This is why {@code MlaSelfAttentionLayer} computes its backward pass itself
 * instead of building on SameDiffLayer.
 */
class LayerSameDiffGradientScaleTest {
    private static final int N_IN = 5, N_OUT = 4, BATCH = 3;
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

    /** tanh(x W + b) written as a SameDiffLayer, with DenseLayer's parameter names and shapes. */
    static final class TanhDenseSameDiff extends SameDiffLayer {
        private int nIn, nOut;

        private TanhDenseSameDiff() {}

        TanhDenseSameDiff(int nIn, int nOut) {
            this.nIn = nIn;
            this.nOut = nOut;
        }

        public int getNIn() { return nIn; }
        public void setNIn(int n) { nIn = n; }
        public int getNOut() { return nOut; }
        public void setNOut(int n) { nOut = n; }

        @Override
        public InputType getOutputType(int layerIndex, InputType inputType) {
            return InputType.feedForward(nOut);
        }

        @Override
        public void defineParameters(SDLayerParams params) {
            params.addWeightParam("W", nIn, nOut);
            params.addBiasParam("b", 1, nOut);
        }

        @Override
        public void initializeParameters(Map<String, INDArray> params) {
            params.get("W").assign(Nd4j.randn(DataType.DOUBLE, nIn, nOut).muli(0.5));
            params.get("b").assign(Nd4j.randn(DataType.DOUBLE, 1, nOut).muli(0.1));
        }

        @Override
        public SDVariable defineLayer(SameDiff sd, SDVariable x, Map<String, SDVariable> p, SDVariable mask) {
            return sd.math.tanh(x.mmul(p.get("W")).add(p.get("b")));
        }
    }

    private static MultiLayerNetwork net(org.deeplearning4j.nn.conf.layers.Layer first) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder()
                .dataType(DataType.DOUBLE).seed(12).updater(new NoOp())
                .list()
                .layer(first)
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                        .nIn(N_OUT).nOut(2).build())
                .setInputType(InputType.feedForward(N_IN))
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /** Central difference of the score with respect to one parameter entry. */
    private static double numericalGradient(MultiLayerNetwork net, DataSet ds, String param, long index) {
        INDArray p = net.getParam(param);
        double orig = p.getDouble(index), eps = 1e-6;
        p.putScalar(index, orig + eps);
        double plus = net.score(ds, true);
        p.putScalar(index, orig - eps);
        double minus = net.score(ds, true);
        p.putScalar(index, orig);
        return (plus - minus) / (2 * eps);
    }

    @Test
    void sameDiffLayerReturnsTwiceTheTrueGradientForItsParametersAndInput() {
        Nd4j.getRandom().setSeed(3);
        MultiLayerNetwork sdNet = net(new TanhDenseSameDiff(N_IN, N_OUT));
        MultiLayerNetwork denseNet = net(new DenseLayer.Builder().nIn(N_IN).nOut(N_OUT)
                .activation(Activation.TANH).build());
        for (String p : new String[] {"0_W", "0_b", "1_W", "1_b"}) {
            denseNet.getParam(p).assign(sdNet.getParam(p));
        }
        INDArray x = Nd4j.randn(DataType.DOUBLE, BATCH, N_IN);
        INDArray y = Nd4j.randn(DataType.DOUBLE, BATCH, 2);
        DataSet ds = new DataSet(x, y);

        Gradient gSd = gradient(sdNet, x, y);
        Gradient gDense = gradient(denseNet, x, y);
        assertEquals(sdNet.score(ds, false), denseNet.score(ds, false), 1e-12, "same forward pass");

        // The dense layer agrees with finite differences; the SameDiffLayer's own parameter
        // gradients are exactly twice as large; the output layer above it is unaffected.
        double numeric = numericalGradient(denseNet, ds, "0_W", 0);
        // DL4J's backprop gradients are sums over the minibatch; the score is the mean.
        double dense = gDense.getGradientFor("0_W").getDouble(0) / BATCH;
        assertEquals(numeric, dense, 1e-6 * Math.max(1, Math.abs(numeric)), "DenseLayer gradient vs finite difference");
        System.out.printf("SameDiffLayer gradient check: 0_W[0] numerical %.9f, DenseLayer %.9f, SameDiffLayer %.9f%n",
                numeric, dense, gSd.getGradientFor("0_W").getDouble(0) / BATCH);
        for (String p : new String[] {"0_W", "0_b"}) {
            INDArray ratio = gSd.getGradientFor(p).div(gDense.getGradientFor(p));
            System.out.printf("  %s: SameDiffLayer / DenseLayer ratio min %.12f max %.12f%n", p,
                    ratio.minNumber().doubleValue(), ratio.maxNumber().doubleValue());
            assertEquals(2.0, ratio.minNumber().doubleValue(), 1e-9, p);
            assertEquals(2.0, ratio.maxNumber().doubleValue(), 1e-9, p);
        }
        for (String p : new String[] {"1_W", "1_b"}) {
            assertTrue(gSd.getGradientFor(p).equalsWithEps(gDense.getGradientFor(p), 1e-12), p);
        }

        // Gradient with respect to the network input (the layer's epsilon output).
        INDArray dxSd = inputGradient(sdNet, x, y), dxDense = inputGradient(denseNet, x, y);
        INDArray ratio = dxSd.div(dxDense);
        System.out.printf("  input: SameDiffLayer / DenseLayer ratio min %.12f max %.12f%n",
                ratio.minNumber().doubleValue(), ratio.maxNumber().doubleValue());
        assertEquals(2.0, ratio.minNumber().doubleValue(), 1e-9, "input gradient");
        assertEquals(2.0, ratio.maxNumber().doubleValue(), 1e-9, "input gradient");

        // DL4J's own gradient check therefore rejects the SameDiffLayer network (relative error
        // |2g - g| / (|2g| + |g|) = 1/3 on its parameters) and accepts the DenseLayer one.
        assertTrue(GradientCheckUtil.checkGradients(gradientCheck(denseNet, x, y)), "DenseLayer gradient check");
        assertFalse(GradientCheckUtil.checkGradients(gradientCheck(sdNet, x, y)), "SameDiffLayer gradient check");
    }

    private static GradientCheckUtil.MLNConfig gradientCheck(MultiLayerNetwork net, INDArray x, INDArray y) {
        return new GradientCheckUtil.MLNConfig().net(net).input(x).labels(y).epsilon(1e-6).maxRelError(1e-5)
                .minAbsoluteError(1e-9).print(GradientCheckUtil.PrintMode.FAILURES_ONLY);
    }

    private static Gradient gradient(MultiLayerNetwork net, INDArray x, INDArray y) {
        net.setInput(x);
        net.setLabels(y);
        net.computeGradientAndScore();
        Gradient g = net.gradient();
        Gradient copy = new org.deeplearning4j.nn.gradient.DefaultGradient();
        for (Map.Entry<String, INDArray> e : g.gradientForVariable().entrySet()) {
            copy.setGradientFor(e.getKey(), e.getValue().dup());
        }
        return copy;
    }

    private static INDArray inputGradient(MultiLayerNetwork net, INDArray x, INDArray y) {
        net.setInput(x);
        net.setLabels(y);
        net.feedForward(true, false);
        Pair<Gradient, INDArray> p = net.calculateGradients(x, y, null, null);
        return p.getSecond().dup();
    }
}
