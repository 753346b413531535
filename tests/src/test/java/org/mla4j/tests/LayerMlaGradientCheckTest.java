package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertTrue;

import org.deeplearning4j.gradientcheck.GradientCheckUtil;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.graph.ElementWiseVertex;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.GlobalPoolingLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.PoolingType;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.layers.dl4j.MlaSelfAttentionLayer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * DL4J's own numerical gradient check (GradientCheckUtil, float64, central differences with
 * epsilon 1e-6) of the parameters of networks holding {@link MlaSelfAttentionLayer}, in a
 * MultiLayerNetwork and in a ComputationGraph, with and without a feature mask, causal and
 * not, with and without query compression. The masked cases check every parameter entry of
 * the network; the others a subset of each parameter array.
 */
class LayerMlaGradientCheckTest {
    private static final int N_IN = 8, BATCH = 2, STEPS = 5, CLASSES = 3;
    /** Tighter than DL4J's customary 1e-3: the layer's gradients are exact. */
    private static final double MAX_REL_ERROR = 1e-5, MIN_ABS_ERROR = 1e-9;
    /** Entries checked per parameter array in the subset checks (the masked cases check all). */
    private static final int SUBSET = 12;
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

    private static MlaSelfAttentionLayer mla(int nOut, int qLora, boolean causal) {
        return new MlaSelfAttentionLayer.Builder().nOut(nOut).heads(2).qLora(qLora).kvLora(6)
                .qkNope(4).qkRope(4).vHead(3).causal(causal).ropeTheta(100).build();
    }

    /** Row 0 fully present; row 1 with a masked middle timestep and trailing padding. */
    static INDArray mask() {
        return Nd4j.createFromArray(new double[][] {{1, 1, 1, 1, 1}, {1, 0, 1, 1, 0}});
    }

    /** One-hot labels [BATCH, CLASSES, STEPS], class (b + 2t) mod CLASSES. */
    private static INDArray oneHotPerStep() {
        INDArray y = Nd4j.zeros(DataType.DOUBLE, BATCH, CLASSES, STEPS);
        for (int b = 0; b < BATCH; b++) {
            for (int t = 0; t < STEPS; t++) y.putScalar(b, (b + 2 * t) % CLASSES, t, 1.0);
        }
        return y;
    }

    private static MultiLayerNetwork mln(MlaSelfAttentionLayer layer) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder()
                .dataType(DataType.DOUBLE).seed(42).updater(new NoOp()).weightInit(WeightInit.XAVIER)
                .list()
                .layer(layer)
                .layer(new RnnOutputLayer.Builder(LossFunction.MCXENT).activation(Activation.SOFTMAX)
                        .nOut(CLASSES).build())
                .setInputType(InputType.recurrent(N_IN))
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /**
     * Checks every parameter entry ({@code perParam} 0) or, to keep the suite fast, about
     * {@code perParam} entries of each parameter array.
     */
    private static void checkMln(MlaSelfAttentionLayer layer, INDArray mask, int perParam) {
        MultiLayerNetwork net = mln(layer);
        Nd4j.getRandom().setSeed(7);
        INDArray x = Nd4j.randn(DataType.DOUBLE, BATCH, N_IN, STEPS);
        boolean ok = GradientCheckUtil.checkGradients(new GradientCheckUtil.MLNConfig().net(net).input(x)
                .labels(oneHotPerStep()).inputMask(mask).labelMask(mask)
                .subset(perParam > 0).maxPerParam(perParam)
                .epsilon(1e-6).maxRelError(MAX_REL_ERROR).minAbsoluteError(MIN_ABS_ERROR)
                .print(GradientCheckUtil.PrintMode.FAILURES_ONLY));
        assertTrue(ok, "gradient check of " + layer + (mask == null ? "" : " with mask"));
    }

    @Test
    void multiLayerNetworkWithoutMask() {
        checkMln(mla(6, 6, false), null, SUBSET);
    }

    @Test
    void multiLayerNetworkWithMask() {
        checkMln(mla(6, 6, false), mask(), 0);
    }

    @Test
    void multiLayerNetworkCausalWithMask() {
        checkMln(mla(6, 6, true), mask(), 0);
    }

    @Test
    void multiLayerNetworkWithoutQueryCompression() {
        checkMln(mla(5, 0, true), null, SUBSET);
    }

    /** in -> attention -> (+ in) -> average pooling over unmasked steps -> softmax output. */
    private static void checkGraph(INDArray mask, boolean causal, int perParam) {
        ComputationGraphConfiguration conf = new NeuralNetConfiguration.Builder()
                .dataType(DataType.DOUBLE).seed(43).updater(new NoOp()).weightInit(WeightInit.XAVIER)
                .graphBuilder()
                .addInputs("in")
                .addLayer("attn", mla(N_IN, 5, causal), "in")
                .addVertex("residual", new ElementWiseVertex(ElementWiseVertex.Op.Add), "attn", "in")
                .addLayer("pool", new GlobalPoolingLayer.Builder(PoolingType.AVG).build(), "residual")
                .addLayer("out", new OutputLayer.Builder(LossFunction.MCXENT).activation(Activation.SOFTMAX)
                        .nOut(CLASSES).build(), "pool")
                .setOutputs("out")
                .setInputTypes(InputType.recurrent(N_IN))
                .build();
        ComputationGraph graph = new ComputationGraph(conf);
        graph.init();
        Nd4j.getRandom().setSeed(8);
        INDArray x = Nd4j.randn(DataType.DOUBLE, BATCH, N_IN, STEPS);
        INDArray y = Nd4j.createFromArray(new double[][] {{0, 1, 0}, {0, 0, 1}});
        boolean ok = GradientCheckUtil.checkGradients(new GradientCheckUtil.GraphConfig().net(graph)
                .inputs(new INDArray[] {x}).labels(new INDArray[] {y})
                .inputMask(mask == null ? null : new INDArray[] {mask})
                .subset(perParam > 0).maxPerParam(perParam)
                .epsilon(1e-6).maxRelError(MAX_REL_ERROR).minAbsoluteError(MIN_ABS_ERROR)
                .print(GradientCheckUtil.PrintMode.FAILURES_ONLY));
        assertTrue(ok, "graph gradient check" + (mask == null ? "" : " with mask") + (causal ? ", causal" : ""));
    }

    @Test
    void computationGraphWithoutMask() {
        checkGraph(null, true, SUBSET);
    }

    @Test
    void computationGraphWithMask() {
        checkGraph(mask(), false, 0);
    }
}
