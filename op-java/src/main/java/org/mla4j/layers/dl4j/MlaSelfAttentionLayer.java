package org.mla4j.layers.dl4j;

import java.util.Collection;
import java.util.Map;
import java.util.Objects;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.InputPreProcessor;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.InputTypeUtil;
import org.deeplearning4j.nn.conf.layers.LayerValidation;
import org.deeplearning4j.nn.conf.memory.LayerMemoryReport;
import org.deeplearning4j.nn.conf.memory.MemoryReport;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.mla4j.ops.RopeConfig;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Configuration of a DeepSeek-V3-style Multi-head Latent Attention (MLA) self-attention layer
 * for {@code MultiLayerNetwork} and {@code ComputationGraph}, a drop-in alternative to DL4J's
 * {@code SelfAttentionLayer}.
 *
 * <p>Shapes: input {@code [batch, nIn, timesteps]} (NCW, like DL4J's recurrent and attention
 * layers; NWC {@code [batch, timesteps, nIn]} with {@code dataFormat(RNNFormat.NWC)}), output
 * {@code [batch, nOut, timesteps]} in the same format. An optional feature mask
 * {@code [batch, timesteps]} (1 = present, 0 = padding) removes masked timesteps from every
 * query's key set; outputs are still computed at masked timesteps (they attend to the unmasked
 * keys, as in {@code SelfAttentionLayer}) and the mask is passed on unchanged to the next layer.
 * Any mask pattern works, with or without the causal option: mla_attention has no mask input,
 * so the layer appends one dimension to queries (a constant M) and keys (0 where present, -M
 * where masked), which pushes masked keys' softmax weights to exactly zero. A query whose keys
 * are all masked (possible only at a masked timestep) attends to the masked keys instead.
 * The layer keeps no state between calls: {@code rnnTimeStep} attends within the given chunk.
 *
 * <p>Per token t with input h (d_model = nIn), the layer computes
 * <pre>
 *   cq = RMSNorm(h W_dq) g_q                 (qLora &gt; 0; otherwise q = h W_q)
 *   [qc; qr]_i = cq W_uq,i  per head i       (qkNope + qkRope dims)
 *   qr = R(t) qr                             (RoPE on interleaved pairs, mla_rope)
 *   [c~; kr~] = h W_dkv;  c = RMSNorm(c~) g_kv;  kr = R(t) kr~   (one RoPE key shared by all heads)
 *   k_i = [c W_uk,i; kr],  v_i = c W_uv,i
 *   o = attention(q, k, v) (mla_attention, scale mscale^2 / sqrt(qkNope + qkRope), optional causal)
 *   out = activation([o_1 .. o_heads] W_o)   (activation: identity unless configured)
 * </pre>
 * Parameters (names as in the parameter table): {@code Wdq [nIn, qLora]}, {@code gq [1, qLora]},
 * {@code Wuq [qLora, heads*(qkNope+qkRope)]} (or {@code Wq [nIn, heads*(qkNope+qkRope)]} when
 * qLora is 0), {@code Wdkv [nIn, kvLora+qkRope]}, {@code gkv [1, kvLora]},
 * {@code Wuk [kvLora, heads*qkNope]}, {@code Wuv [kvLora, heads*vHead]},
 * {@code Wo [heads*vHead, nOut]}. Weights use the layer's weight init (fan-in and fan-out of
 * each matrix); the RMSNorm gains start at 1. Weight regularisation applies to the matrices
 * only.
 *
 * <pre>{@code
 * new MlaSelfAttentionLayer.Builder().nIn(256).nOut(256).heads(4)
 *         .qLora(64).kvLora(64).qkNope(32).qkRope(16).vHead(32)
 *         .causal(true).ropeTheta(10000).build();
 * }</pre>
 *
 * <p>The layer runs the mla4j ops; it calls {@link org.mla4j.Mla4j#install()} when a network
 * instantiates it. Its JSON form is the usual DL4J layer JSON, so networks holding it survive
 * {@code toJson}/{@code fromJson} and {@code ModelSerializer}.
 */
public class MlaSelfAttentionLayer extends FeedForwardLayer {
    private int heads;
    private int qLora;
    private int kvLora;
    private int qkNope;
    private int qkRope;
    private int vHead;
    private boolean causal;
    private double ropeTheta = 10000;
    private double yarnFactor = 1;
    private long yarnOriginalMaxPosition;
    private double yarnBetaFast = 32;
    private double yarnBetaSlow = 1;
    private double rmsEps = 1e-6;
    private RNNFormat rnnDataFormat = RNNFormat.NCW;

    /** For JSON deserialisation. */
    protected MlaSelfAttentionLayer() {}

    protected MlaSelfAttentionLayer(Builder b) {
        super(b);
        heads = b.heads;
        qLora = b.qLora;
        kvLora = b.kvLora;
        qkNope = b.qkNope;
        qkRope = b.qkRope;
        vHead = b.vHead;
        causal = b.causal;
        ropeTheta = b.ropeTheta;
        yarnFactor = b.yarnFactor;
        yarnOriginalMaxPosition = b.yarnOriginalMaxPosition;
        yarnBetaFast = b.yarnBetaFast;
        yarnBetaSlow = b.yarnBetaSlow;
        rmsEps = b.rmsEps;
        rnnDataFormat = b.rnnDataFormat;
    }

    // ---- derived values (no bean-style names: they are not part of the JSON form) ----

    /** Query/key dims per head: qkNope + qkRope. */
    public int qkHeadDim() {
        return qkNope + qkRope;
    }

    /** The RoPE of queries and the shared key: the last qkRope dims, interleaved pairs. */
    public RopeConfig ropeConfig() {
        RopeConfig r = RopeConfig.interleaved(qkRope, ropeTheta);
        return yarnFactor > 1 ? r.withYarn(yarnFactor, yarnOriginalMaxPosition, yarnBetaFast, yarnBetaSlow) : r;
    }

    /** Softmax scale: 1/sqrt(qkNope + qkRope), times YaRN's mscale^2 when YaRN is on. */
    public double softmaxScale() {
        double m = ropeConfig().mscale();
        return m * m / Math.sqrt(qkHeadDim());
    }

    // ---- DL4J layer configuration ----

    @Override
    public org.deeplearning4j.nn.api.Layer instantiate(NeuralNetConfiguration conf,
            Collection<TrainingListener> listeners, int layerIndex, INDArray layerParamsView,
            boolean initializeParams, DataType networkDataType) {
        LayerValidation.assertNInNOutSet("MlaSelfAttentionLayer", getLayerName(), layerIndex, getNIn(), getNOut());
        MlaSelfAttention layer = new MlaSelfAttention(conf, networkDataType);
        layer.setListeners(listeners);
        layer.setIndex(layerIndex);
        layer.setParamsViewArray(layerParamsView);
        Map<String, INDArray> params = initializer().init(conf, layerParamsView, initializeParams);
        layer.setParamTable(params);
        layer.setConf(conf);
        return layer;
    }

    @Override
    public ParamInitializer initializer() {
        return MlaSelfAttentionParamInitializer.getInstance();
    }

    @Override
    public InputType getOutputType(int layerIndex, InputType inputType) {
        InputType.InputTypeRecurrent r = recurrent(inputType);
        return InputType.recurrent(getNOut(), r.getTimeSeriesLength(), rnnDataFormat);
    }

    @Override
    public void setNIn(InputType inputType, boolean override) {
        InputType.InputTypeRecurrent r = recurrent(inputType);
        if (getNIn() <= 0 || override) setNIn(r.getSize());
        if (rnnDataFormat == null || override) rnnDataFormat = r.getFormat();
    }

    @Override
    public InputPreProcessor getPreProcessorForInputType(InputType inputType) {
        return InputTypeUtil.getPreprocessorForInputTypeRnnLayers(inputType, rnnDataFormat, getLayerName());
    }

    private InputType.InputTypeRecurrent recurrent(InputType inputType) {
        if (inputType == null || inputType.getType() != InputType.Type.RNN) {
            throw new IllegalStateException("MlaSelfAttentionLayer (layer \"" + getLayerName()
                    + "\"): expected a recurrent input type [batch, features, timesteps], got " + inputType);
        }
        return (InputType.InputTypeRecurrent) inputType;
    }

    @Override
    public LayerMemoryReport getMemoryReport(InputType inputType) {
        InputType out = getOutputType(-1, inputType);
        long params = initializer().numParams(this);
        long updater = getIUpdater() == null ? 0 : getIUpdater().stateSize(params);
        // Per example and timestep: q, k (heads * d_qk each), v and o (heads * vHead each),
        // the latents and the projections; the attention itself needs no [s, s] scores.
        long perStep = 2L * heads * qkHeadDim() + 2L * heads * vHead + 2L * (qLora + kvLora + qkRope) + getNOut();
        long ts = Math.max(1, ((InputType.InputTypeRecurrent) inputType).getTimeSeriesLength());
        return new LayerMemoryReport.Builder(getLayerName(), MlaSelfAttentionLayer.class, inputType, out)
                .standardMemory(params, updater)
                .workingMemory(0, perStep * ts, 0, 2 * perStep * ts)
                .cacheMemory(MemoryReport.CACHE_MODE_ALL_ZEROS, MemoryReport.CACHE_MODE_ALL_ZEROS)
                .build();
    }

    @Override
    public boolean isPretrainParam(String paramName) {
        return false;
    }

    // ---- bean properties (the JSON form) ----

    public int getHeads() { return heads; }
    public void setHeads(int heads) { this.heads = heads; }
    public int getQLora() { return qLora; }
    public void setQLora(int qLora) { this.qLora = qLora; }
    public int getKvLora() { return kvLora; }
    public void setKvLora(int kvLora) { this.kvLora = kvLora; }
    public int getQkNope() { return qkNope; }
    public void setQkNope(int qkNope) { this.qkNope = qkNope; }
    public int getQkRope() { return qkRope; }
    public void setQkRope(int qkRope) { this.qkRope = qkRope; }
    public int getVHead() { return vHead; }
    public void setVHead(int vHead) { this.vHead = vHead; }
    public boolean isCausal() { return causal; }
    public void setCausal(boolean causal) { this.causal = causal; }
    public double getRopeTheta() { return ropeTheta; }
    public void setRopeTheta(double ropeTheta) { this.ropeTheta = ropeTheta; }
    public double getYarnFactor() { return yarnFactor; }
    public void setYarnFactor(double yarnFactor) { this.yarnFactor = yarnFactor; }
    public long getYarnOriginalMaxPosition() { return yarnOriginalMaxPosition; }
    public void setYarnOriginalMaxPosition(long p) { this.yarnOriginalMaxPosition = p; }
    public double getYarnBetaFast() { return yarnBetaFast; }
    public void setYarnBetaFast(double yarnBetaFast) { this.yarnBetaFast = yarnBetaFast; }
    public double getYarnBetaSlow() { return yarnBetaSlow; }
    public void setYarnBetaSlow(double yarnBetaSlow) { this.yarnBetaSlow = yarnBetaSlow; }
    public double getRmsEps() { return rmsEps; }
    public void setRmsEps(double rmsEps) { this.rmsEps = rmsEps; }
    public RNNFormat getRnnDataFormat() { return rnnDataFormat; }
    public void setRnnDataFormat(RNNFormat rnnDataFormat) { this.rnnDataFormat = rnnDataFormat; }

    @Override
    public boolean equals(Object o) {
        if (this == o) return true;
        if (!(o instanceof MlaSelfAttentionLayer) || !super.equals(o)) return false;
        MlaSelfAttentionLayer l = (MlaSelfAttentionLayer) o;
        return heads == l.heads && qLora == l.qLora && kvLora == l.kvLora && qkNope == l.qkNope
                && qkRope == l.qkRope && vHead == l.vHead && causal == l.causal
                && Double.compare(ropeTheta, l.ropeTheta) == 0 && Double.compare(yarnFactor, l.yarnFactor) == 0
                && yarnOriginalMaxPosition == l.yarnOriginalMaxPosition
                && Double.compare(yarnBetaFast, l.yarnBetaFast) == 0 && Double.compare(yarnBetaSlow, l.yarnBetaSlow) == 0
                && Double.compare(rmsEps, l.rmsEps) == 0 && rnnDataFormat == l.rnnDataFormat;
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), heads, qLora, kvLora, qkNope, qkRope, vHead, causal, ropeTheta,
                yarnFactor, yarnOriginalMaxPosition, yarnBetaFast, yarnBetaSlow, rmsEps, rnnDataFormat);
    }

    @Override
    public String toString() {
        return "MlaSelfAttentionLayer(name=" + getLayerName() + ", nIn=" + getNIn() + ", nOut=" + getNOut()
                + ", heads=" + heads + ", qLora=" + qLora + ", kvLora=" + kvLora + ", qkNope=" + qkNope
                + ", qkRope=" + qkRope + ", vHead=" + vHead + ", causal=" + causal + ", rope=" + ropeConfig()
                + ", format=" + rnnDataFormat + ")";
    }

    /**
     * Builder in DL4J style. Required: {@code nOut}, {@code heads}, {@code kvLora},
     * {@code qkNope}, {@code qkRope} (even), {@code vHead}; {@code nIn} unless the network's
     * input type sets it. Defaults: no query compression (qLora 0), not causal, RoPE theta
     * 10000 without YaRN, RMSNorm epsilon 1e-6, NCW, identity activation (the network-wide
     * default activation does not apply to this layer; set one here if wanted).
     */
    public static class Builder extends FeedForwardLayer.Builder<Builder> {
        private int heads;
        private int qLora;
        private int kvLora;
        private int qkNope;
        private int qkRope;
        private int vHead;
        private boolean causal;
        private double ropeTheta = 10000;
        private double yarnFactor = 1;
        private long yarnOriginalMaxPosition;
        private double yarnBetaFast = 32;
        private double yarnBetaSlow = 1;
        private double rmsEps = 1e-6;
        private RNNFormat rnnDataFormat = RNNFormat.NCW;

        public Builder() {
            activation(Activation.IDENTITY);
        }

        /** Number of attention heads. */
        public Builder heads(int heads) { this.heads = heads; return this; }

        /** Rank of the query compression (0: queries projected from the input directly). */
        public Builder qLora(int qLora) { this.qLora = qLora; return this; }

        /** Rank of the shared key/value latent c. */
        public Builder kvLora(int kvLora) { this.kvLora = kvLora; return this; }

        /** Per-head query/key dims without position information. */
        public Builder qkNope(int qkNope) { this.qkNope = qkNope; return this; }

        /** Per-head query/key dims rotated by RoPE (even); the RoPE key is shared by all heads. */
        public Builder qkRope(int qkRope) { this.qkRope = qkRope; return this; }

        /** Per-head value dims. */
        public Builder vHead(int vHead) { this.vHead = vHead; return this; }

        /** Whether timestep t attends to timesteps up to t only. */
        public Builder causal(boolean causal) { this.causal = causal; return this; }

        /** RoPE base theta (default 10000). */
        public Builder ropeTheta(double theta) { this.ropeTheta = theta; return this; }

        /**
         * YaRN context extension of the RoPE frequencies (DeepSeek's formulas): scaling factor
         * (&gt; 1), the original context length, beta_fast and beta_slow (DeepSeek-V3: 40, 4096,
         * 32, 1). Also multiplies the softmax scale by mscale^2.
         */
        public Builder yarn(double factor, long originalMaxPosition, double betaFast, double betaSlow) {
            this.yarnFactor = factor;
            this.yarnOriginalMaxPosition = originalMaxPosition;
            this.yarnBetaFast = betaFast;
            this.yarnBetaSlow = betaSlow;
            return this;
        }

        /** Epsilon of both RMSNorms (default 1e-6). */
        public Builder rmsEps(double eps) { this.rmsEps = eps; return this; }

        /** Layout of input and output: NCW [batch, features, timesteps] (default) or NWC. */
        public Builder dataFormat(RNNFormat format) { this.rnnDataFormat = format; return this; }

        @Override
        @SuppressWarnings("unchecked")
        public MlaSelfAttentionLayer build() {
            require(nOut > 0, "nOut must be > 0, got " + nOut);
            require(nIn >= 0, "nIn must be >= 0 (0: set from the input type), got " + nIn);
            require(heads > 0, "heads must be > 0, got " + heads);
            require(qLora >= 0, "qLora must be >= 0 (0: no query compression), got " + qLora);
            require(kvLora > 0, "kvLora must be > 0, got " + kvLora);
            require(qkNope > 0, "qkNope must be > 0, got " + qkNope);
            require(qkRope > 0 && qkRope % 2 == 0, "qkRope must be even and > 0, got " + qkRope);
            require(vHead > 0, "vHead must be > 0, got " + vHead);
            require(ropeTheta > 0, "ropeTheta must be > 0, got " + ropeTheta);
            require(yarnFactor >= 1, "YaRN factor must be >= 1 (1: off), got " + yarnFactor);
            require(yarnFactor == 1 || yarnOriginalMaxPosition > 0,
                    "YaRN needs the original context length (> 0), got " + yarnOriginalMaxPosition);
            require(rmsEps > 0, "rmsEps must be > 0, got " + rmsEps);
            require(rnnDataFormat != null, "dataFormat must not be null");
            return new MlaSelfAttentionLayer(this);
        }

        private static void require(boolean ok, String message) {
            if (!ok) throw new IllegalArgumentException("MlaSelfAttentionLayer: " + message);
        }
    }
}
