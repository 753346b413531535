package org.mla4j.tests;

import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.layers.dl4j.MlaSelfAttentionLayer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

class LayerTimingScratchTest {
    MultiLayerNetwork net(org.deeplearning4j.nn.conf.layers.Layer l) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().dataType(DataType.DOUBLE).updater(new NoOp()).list()
                .layer(l)
                .layer(new RnnOutputLayer.Builder(LossFunction.MCXENT).activation(Activation.SOFTMAX).nOut(3).build())
                .setInputType(InputType.recurrent(8)).build();
        MultiLayerNetwork n = new MultiLayerNetwork(conf); n.init(); return n;
    }
    void time(String what, MultiLayerNetwork n, DataSet ds) {
        for (int i = 0; i < 20; i++) n.score(ds, true);
        java.lang.management.ThreadMXBean tb = java.lang.management.ManagementFactory.getThreadMXBean();
        long t0 = System.nanoTime(), c0 = tb.getCurrentThreadCpuTime();
        for (int i = 0; i < 100; i++) n.score(ds, true);
        System.out.printf("%s: %.3f ms per score, cpu %.3f ms%n", what, (System.nanoTime() - t0) / 1e8, (tb.getCurrentThreadCpuTime() - c0) / 1e8);
    }
    @Test
    void timing() {
        Mla4j.install();
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
        INDArray x = Nd4j.randn(DataType.DOUBLE, 2, 8, 5);
        INDArray y = Nd4j.zeros(DataType.DOUBLE, 2, 3, 5);
        y.get(org.nd4j.linalg.indexing.NDArrayIndex.all(), org.nd4j.linalg.indexing.NDArrayIndex.point(0), org.nd4j.linalg.indexing.NDArrayIndex.all()).assign(1);
        DataSet ds = new DataSet(x, y);
        MultiLayerNetwork mla = net(new MlaSelfAttentionLayer.Builder().nOut(6).heads(2).qLora(6).kvLora(6).qkNope(4).qkRope(4).vHead(3).build());
        MultiLayerNetwork lstm = net(new LSTM.Builder().nOut(6).activation(Activation.TANH).build());
        for (int r = 0; r < 2; r++) { time("mla", mla, ds); time("lstm", lstm, ds); }
        org.nd4j.linalg.factory.Nd4j.factory().blas().setMaxThreads(1);
        for (int r = 0; r < 2; r++) { time("mla blas1", mla, ds); time("lstm blas1", lstm, ds); }
    }
}
