package org.mla4j.layers.dl4j;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.deeplearning4j.exception.DL4JInvalidInputException;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.BaseLayer;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.mla4j.Mla4j;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The network-side layer of {@link MlaSelfAttentionLayer}: input {@code [batch, nIn, timesteps]}
 * (or NWC), output {@code [batch, nOut, timesteps]} in the same format, optional feature mask
 * {@code [batch, timesteps]}.
 *
 * <p>Forward and backward are written out explicitly ({@link MlaAttentionMath}): the layer
 * does not go through DL4J's SameDiffLayer, whose gradients are twice the true ones in
 * 1.0.0-M2.1. The backward pass recomputes the forward intermediates from the stored input,
 * as DL4J's own layers do, so nothing is kept between the passes outside DL4J's workspaces.
 */
public class MlaSelfAttention extends BaseLayer<MlaSelfAttentionLayer> {

    public MlaSelfAttention(NeuralNetConfiguration conf, DataType dataType) {
        super(conf, dataType);
        Mla4j.install();
    }

    @Override
    public boolean isPretrainLayer() {
        return false;
    }

    @Override
    public boolean hasBias() {
        return false;
    }

    @Override
    public INDArray activate(boolean training, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(false);
        applyDropOutIfNecessary(training, workspaceMgr);
        MlaAttentionMath.Forward f = forward(training, workspaceMgr);
        INDArray a = layerConf().getActivationFn().getActivation(f.z.dup('c'), training);
        return toLayerLayout(a, f.b, f.s, workspaceMgr.createUninitialized(ArrayType.ACTIVATIONS, dataType,
                layerShape(f.b, layerConf().getNOut(), f.s), 'c'));
    }

    @Override
    public Pair<Gradient, INDArray> backpropGradient(INDArray epsilon, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(true);
        MlaAttentionMath.Forward f = forward(true, workspaceMgr);
        long nOut = layerConf().getNOut();
        INDArray eps = epsilon.castTo(dataType);
        if (!Arrays.equals(eps.shape(), layerShape(f.b, nOut, f.s))) {
            throw new DL4JInvalidInputException("MlaSelfAttentionLayer: epsilon must have shape "
                    + Arrays.toString(layerShape(f.b, nOut, f.s)) + ", got " + Arrays.toString(eps.shape()) + " " + layerId());
        }
        INDArray epsTokens = tokenMajor(eps).reshape('c', f.b * f.s, nOut);
        INDArray dz = layerConf().getActivationFn().backprop(f.z.dup('c'), epsTokens).getFirst();

        Map<String, INDArray> params = currentParams(true, workspaceMgr);
        INDArray dx = new MlaAttentionMath(layerConf()).backward(f, dz, params, gradientViews);
        Gradient g = new DefaultGradient();
        for (String key : params.keySet()) g.gradientForVariable().put(key, gradientViews.get(key));

        INDArray epsOut = toLayerLayout(dx.reshape('c', f.b * f.s, dx.size(2)), f.b, f.s,
                workspaceMgr.createUninitialized(ArrayType.ACTIVATION_GRAD, dataType, input.shape(), 'c'));
        weightNoiseParams.clear();
        return new Pair<>(g, backpropDropOutIfPresent(epsOut));
    }

    private MlaAttentionMath.Forward forward(boolean training, LayerWorkspaceMgr workspaceMgr) {
        INDArray in = input.castTo(dataType);
        long nIn = layerConf().getNIn();
        if (in.rank() != 3 || in.size(nwc() ? 2 : 1) != nIn) {
            throw new DL4JInvalidInputException("MlaSelfAttentionLayer: input must have shape "
                    + (nwc() ? "[batch, timesteps, " + nIn + "] (NWC)" : "[batch, " + nIn + ", timesteps] (NCW)")
                    + ", got " + Arrays.toString(in.shape()) + " " + layerId());
        }
        INDArray x = tokenMajor(in);
        INDArray mask = maskArray;
        if (mask != null && (mask.rank() != 2 || mask.size(0) != x.size(0) || mask.size(1) != x.size(1))) {
            throw new DL4JInvalidInputException("MlaSelfAttentionLayer: the mask must have shape [batch, timesteps] = ["
                    + x.size(0) + ", " + x.size(1) + "], got " + Arrays.toString(mask.shape()) + " " + layerId());
        }
        return new MlaAttentionMath(layerConf()).forward(x, mask, currentParams(training, workspaceMgr));
    }

    /** The parameters as used in this pass (with weight noise, if configured). */
    private Map<String, INDArray> currentParams(boolean training, LayerWorkspaceMgr workspaceMgr) {
        Map<String, INDArray> p = new LinkedHashMap<>();
        for (String key : params.keySet()) p.put(key, getParamWithNoise(key, training, workspaceMgr));
        return p;
    }

    private boolean nwc() {
        return layerConf().getRnnDataFormat() == RNNFormat.NWC;
    }

    /** [b, features, s] (NCW) or [b, s, features] (NWC). */
    private long[] layerShape(long b, long features, long s) {
        return nwc() ? new long[] {b, s, features} : new long[] {b, features, s};
    }

    /** A layer-layout array as a row-major [b, s, features] copy. */
    private INDArray tokenMajor(INDArray a) {
        return (nwc() ? a : a.permute(0, 2, 1)).dup('c');
    }

    /** Writes tokens [b*s, features] into {@code target} in the layer layout. */
    private INDArray toLayerLayout(INDArray tokens, long b, long s, INDArray target) {
        INDArray bsf = tokens.reshape('c', b, s, tokens.size(1));
        target.assign(nwc() ? bsf : bsf.permute(0, 2, 1));
        return target;
    }
}
