package org.mla4j.layers.dl4j;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.weights.IWeightInit;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Parameters of {@link MlaSelfAttentionLayer}: their names, shapes and places in the layer's
 * flat parameter (and gradient) vector, in this order:
 * {@code Wdq [nIn, qLora]}, {@code gq [1, qLora]}, {@code Wuq [qLora, heads*(qkNope+qkRope)]}
 * (these three replaced by {@code Wq [nIn, heads*(qkNope+qkRope)]} when qLora is 0),
 * {@code Wdkv [nIn, kvLora+qkRope]}, {@code gkv [1, kvLora]}, {@code Wuk [kvLora, heads*qkNope]},
 * {@code Wuv [kvLora, heads*vHead]}, {@code Wo [heads*vHead, nOut]}. Each is a row-major view
 * of the flat vector. Names contain no underscore: DL4J joins layer and parameter names with
 * one.
 */
public final class MlaSelfAttentionParamInitializer implements ParamInitializer {
    public static final String W_DQ = "Wdq";
    public static final String G_Q = "gq";
    public static final String W_UQ = "Wuq";
    public static final String W_Q = "Wq";
    public static final String W_DKV = "Wdkv";
    public static final String G_KV = "gkv";
    public static final String W_UK = "Wuk";
    public static final String W_UV = "Wuv";
    public static final String W_O = "Wo";

    private static final MlaSelfAttentionParamInitializer INSTANCE = new MlaSelfAttentionParamInitializer();

    private MlaSelfAttentionParamInitializer() {}

    public static MlaSelfAttentionParamInitializer getInstance() {
        return INSTANCE;
    }

    /** Name to shape, in flat-vector order. */
    public static Map<String, long[]> shapes(MlaSelfAttentionLayer l) {
        long nIn = l.getNIn(), nOut = l.getNOut(), h = l.getHeads();
        Map<String, long[]> s = new LinkedHashMap<>();
        if (l.getQLora() > 0) {
            s.put(W_DQ, new long[] {nIn, l.getQLora()});
            s.put(G_Q, new long[] {1, l.getQLora()});
            s.put(W_UQ, new long[] {l.getQLora(), h * l.qkHeadDim()});
        } else {
            s.put(W_Q, new long[] {nIn, h * l.qkHeadDim()});
        }
        s.put(W_DKV, new long[] {nIn, l.getKvLora() + l.getQkRope()});
        s.put(G_KV, new long[] {1, l.getKvLora()});
        s.put(W_UK, new long[] {l.getKvLora(), h * l.getQkNope()});
        s.put(W_UV, new long[] {l.getKvLora(), h * l.getVHead()});
        s.put(W_O, new long[] {h * l.getVHead(), nOut});
        return s;
    }

    private static boolean isGain(String key) {
        return G_Q.equals(key) || G_KV.equals(key);
    }

    private static MlaSelfAttentionLayer conf(Layer layer) {
        if (!(layer instanceof MlaSelfAttentionLayer)) {
            throw new IllegalArgumentException("expected an MlaSelfAttentionLayer configuration, got "
                    + (layer == null ? "null" : layer.getClass().getName()));
        }
        return (MlaSelfAttentionLayer) layer;
    }

    @Override
    public long numParams(NeuralNetConfiguration conf) {
        return numParams(conf.getLayer());
    }

    @Override
    public long numParams(Layer layer) {
        long n = 0;
        for (long[] s : shapes(conf(layer)).values()) n += s[0] * s[1];
        return n;
    }

    @Override
    public List<String> paramKeys(Layer layer) {
        return new ArrayList<>(shapes(conf(layer)).keySet());
    }

    @Override
    public List<String> weightKeys(Layer layer) {
        List<String> keys = paramKeys(layer);
        keys.removeIf(MlaSelfAttentionParamInitializer::isGain);
        return keys;
    }

    @Override
    public List<String> biasKeys(Layer layer) {
        return Collections.emptyList();
    }

    @Override
    public boolean isWeightParam(Layer layer, String key) {
        return shapes(conf(layer)).containsKey(key) && !isGain(key);
    }

    @Override
    public boolean isBiasParam(Layer layer, String key) {
        return false;
    }

    @Override
    public Map<String, INDArray> init(NeuralNetConfiguration conf, INDArray paramsView, boolean initializeParams) {
        MlaSelfAttentionLayer l = conf(conf.getLayer());
        Map<String, INDArray> views = views(l, paramsView);
        if (initializeParams) {
            IWeightInit init = l.getWeightInitFn() != null ? l.getWeightInitFn() : WeightInit.XAVIER.getWeightInitFunction();
            for (Map.Entry<String, INDArray> e : views.entrySet()) {
                INDArray p = e.getValue();
                if (isGain(e.getKey())) {
                    p.assign(1.0);
                } else {
                    init.init(p.size(0), p.size(1), p.shape(), 'c', p);
                }
            }
        }
        return views;
    }

    @Override
    public Map<String, INDArray> getGradientsFromFlattened(NeuralNetConfiguration conf, INDArray gradientView) {
        return views(conf(conf.getLayer()), gradientView);
    }

    private static Map<String, INDArray> views(MlaSelfAttentionLayer l, INDArray flat) {
        Map<String, long[]> shapes = shapes(l);
        long total = 0;
        for (long[] s : shapes.values()) total += s[0] * s[1];
        if (flat.length() != total) {
            throw new IllegalArgumentException("MlaSelfAttentionLayer: expected a parameter vector of length " + total
                    + ", got " + flat.length());
        }
        INDArray vector = flat.reshape(flat.length());
        Map<String, INDArray> views = new LinkedHashMap<>();
        long offset = 0;
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            long n = e.getValue()[0] * e.getValue()[1];
            views.put(e.getKey(), vector.get(NDArrayIndex.interval(offset, offset + n)).reshape('c', e.getValue()));
            offset += n;
        }
        return views;
    }
}
