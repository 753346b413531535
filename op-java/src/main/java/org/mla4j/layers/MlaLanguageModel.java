package org.mla4j.layers;

import java.util.Map;
import org.mla4j.cache.KvCache;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.IUpdater;

/**
 * A small decoder-only language model with DeepSeek-V3-style MLA attention, built in SameDiff:
 * token embedding, {@code layers} pre-norm blocks ({@code x + MLA(RMSNorm(x))},
 * {@code x + MLP(RMSNorm(x))} with a GELU MLP), a final RMSNorm and a linear head.
 *
 * <p>Graph inputs: {@code tokens int32 [b, s]}, {@code positions int32 [b, s]}, for training
 * {@code labels int32 [b * s]} (the next token of every position). Outputs: {@code logits
 * [b, s, vocab]} and the mean cross-entropy {@code loss}. {@link #generator} decodes token by
 * token from paged KV caches (absorbed MLA) and gives the same distributions as the graph.
 */
public final class MlaLanguageModel {
    public final int vocab;
    public final int layers;
    public final int mlpHidden;
    public final MlaV3Config attn;
    public final SameDiff sd;
    private final MlaV3Block[] blocks;

    public MlaLanguageModel(int vocab, int layers, int mlpHidden, MlaV3Config attn, long seed) {
        this.vocab = vocab;
        this.layers = layers;
        this.mlpHidden = mlpHidden;
        this.attn = attn;
        this.sd = SameDiff.create();
        this.blocks = new MlaV3Block[layers];
        build(seed);
    }

    private void build(long seed) {
        int d = attn.dModel;
        Nd4j.getRandom().setSeed(seed);
        SDVariable tokens = sd.placeHolder("tokens", DataType.INT, -1, -1);
        SDVariable positions = sd.placeHolder("positions", DataType.INT, -1, -1);
        SDVariable labels = sd.placeHolder("labels", DataType.INT, -1);
        SDVariable emb = sd.var("emb", Nd4j.randn(DataType.FLOAT, vocab, d).muli(0.5));
        SDVariable x = null;
        for (int l = 0; l < layers; l++) {
            String p = "layer" + l;
            blocks[l] = new MlaV3Block(sd, p + "/attn", attn, DataType.FLOAT, seed + 101 * (l + 1));
            if (l == 0) {
                // Embedding as one-hot x table: ND4J 1.0.0-M2.1's gather gradient breaks in fit().
                x = blocks[0].linear(sd.oneHot(tokens, vocab), emb);
            }
            SDVariable g1 = sd.var(p + "/norm1", Nd4j.ones(DataType.FLOAT, d));
            SDVariable g2 = sd.var(p + "/norm2", Nd4j.ones(DataType.FLOAT, d));
            SDVariable w1 = sd.var(p + "/mlp_w1", Nd4j.randn(DataType.FLOAT, d, mlpHidden).muli(1.0 / Math.sqrt(d)));
            SDVariable w2 = sd.var(p + "/mlp_w2", Nd4j.randn(DataType.FLOAT, mlpHidden, d).muli(0.5 / Math.sqrt(mlpHidden * layers)));
            x = x.add(blocks[l].forward(blocks[l].rmsNorm(x, g1), positions));
            SDVariable hidden = sd.nn.gelu(blocks[0].linear(blocks[l].rmsNorm(x, g2), w1));
            x = x.add(blocks[0].linear(hidden, w2));
        }
        SDVariable gOut = sd.var("norm_out", Nd4j.ones(DataType.FLOAT, d));
        SDVariable wOut = sd.var("head", Nd4j.randn(DataType.FLOAT, d, vocab).muli(1.0 / Math.sqrt(d)));
        SDVariable logits = blocks[0].linear(blocks[0].rmsNorm(x, gOut), wOut).rename("logits");
        SDVariable flat = logits.reshape(-1, vocab);
        sd.loss.sparseSoftmaxCrossEntropy(flat, labels).mean().rename("loss");
        sd.setLossVariables("loss");
    }

    /** Sets the optimiser; call before {@link #trainStep}. */
    public void configureTraining(IUpdater updater) {
        sd.setTrainingConfig(TrainingConfig.builder().updater(updater)
                .dataSetFeatureMapping("tokens", "positions").dataSetLabelMapping("labels").build());
        // ND4J 1.0.0-M2.1 prints a line to System.out for every op it differentiates; build the
        // gradient graph now with those lines held back.
        java.io.PrintStream out = System.out;
        try {
            System.setOut(new java.io.PrintStream(java.io.OutputStream.nullOutputStream()));
            sd.createGradFunction();
        } finally {
            System.setOut(out);
        }
    }

    /** One optimiser step on {@code tokens [b, s]} predicting {@code next [b, s]}; returns the loss before the step. */
    public double trainStep(INDArray tokens, INDArray next) {
        INDArray pos = positionsFor(tokens);
        double loss = loss(tokens, next);
        sd.fit(new org.nd4j.linalg.dataset.MultiDataSet(new INDArray[] {tokens, pos},
                new INDArray[] {next.reshape(-1)}));
        return loss;
    }

    /** Mean cross-entropy of predicting {@code next} from {@code tokens} (natural log). */
    public double loss(INDArray tokens, INDArray next) {
        Map<String, INDArray> out = sd.output(Map.of("tokens", tokens, "positions", positionsFor(tokens),
                "labels", next.reshape(-1)), "loss");
        return out.get("loss").getDouble(0);
    }

    /** Saves the graph with its current weights (and updater state) to {@code file}. */
    public void save(java.io.File file) {
        sd.save(file, true);
    }

    /**
     * Loads weights saved by {@link #save} into a model of the given configuration (the
     * configuration must be the one the file was trained with).
     */
    public static MlaLanguageModel load(java.io.File file, int vocab, int layers, int mlpHidden, MlaV3Config attn) {
        SameDiff saved = SameDiff.load(file, true);
        MlaLanguageModel m = new MlaLanguageModel(vocab, layers, mlpHidden, attn, 0);
        for (SDVariable v : m.sd.variables()) {
            if (v.getVariableType() != org.nd4j.autodiff.samediff.VariableType.VARIABLE) continue;
            SDVariable s = saved.getVariable(v.name());
            if (s == null || !java.util.Arrays.equals(s.getArr().shape(), v.getArr().shape())) {
                throw new IllegalArgumentException("MlaLanguageModel.load: " + file + " has no weight " + v.name()
                        + " of shape " + java.util.Arrays.toString(v.getArr().shape()) + ": different configuration?");
            }
            v.getArr().assign(s.getArr());
        }
        return m;
    }

    /** Logits {@code [b, s, vocab]} of the full-sequence forward. */
    public INDArray logits(INDArray tokens) {
        return sd.output(Map.of("tokens", tokens, "positions", positionsFor(tokens)), "logits").get("logits");
    }

    static INDArray positionsFor(INDArray tokens) {
        int b = (int) tokens.size(0), s = (int) tokens.size(1);
        INDArray pos = Nd4j.create(DataType.INT, b, s);
        for (int t = 0; t < s; t++) pos.get(NDArrayIndex.all(), NDArrayIndex.point(t)).assign(t);
        return pos;
    }

    /** A token-by-token decoder over fresh paged caches (one per layer), from current weights. */
    public Generator generator(CacheFactory caches) {
        return new Generator(caches);
    }

    /** Makes one paged cache per layer (host or device), for rows of {@code dQk} values. */
    public interface CacheFactory {
        KvCache create(int dQk);
    }

    /** Incremental decode: feed one token per sequence, get the next-token logits. */
    public final class Generator implements AutoCloseable {
        private final MlaV3Decoder[] decoders = new MlaV3Decoder[layers];
        private final KvCache[] caches = new KvCache[layers];
        private final INDArray emb, gOut, head;
        private final INDArray[] g1 = new INDArray[layers], g2 = new INDArray[layers], w1 = new INDArray[layers],
                w2 = new INDArray[layers];

        Generator(CacheFactory factory) {
            for (int l = 0; l < layers; l++) {
                decoders[l] = new MlaV3Decoder(blocks[l]);
                caches[l] = factory.create(attn.dQkAbsorbed());
                String p = "layer" + l;
                g1[l] = sd.getVariable(p + "/norm1").getArr();
                g2[l] = sd.getVariable(p + "/norm2").getArr();
                w1[l] = sd.getVariable(p + "/mlp_w1").getArr();
                w2[l] = sd.getVariable(p + "/mlp_w2").getArr();
            }
            emb = sd.getVariable("emb").getArr();
            gOut = sd.getVariable("norm_out").getArr();
            head = sd.getVariable("head").getArr();
        }

        /** Empties every cache (all sequences start again at position 0). */
        public void reset() {
            for (KvCache c : caches) for (int i = 0; i < c.maxBatch(); i++) c.reset(i);
        }

        /** Tokens cached so far for sequence 0. */
        public int length() {
            return caches[0].length(0);
        }

        /** Feeds {@code tokens [b]} at the sequences' current positions; returns logits {@code [b, vocab]}. */
        public INDArray step(int[] tokens) {
            int b = tokens.length;
            int[] pos = new int[b];
            for (int i = 0; i < b; i++) pos[i] = caches[0].length(i);
            INDArray x = emb.getRows(tokens).dup('c');
            for (int l = 0; l < layers; l++) {
                x = x.add(decoders[l].step(rmsNorm(x, g1[l]), pos, caches[l]));
                INDArray pre = rmsNorm(x, g2[l]).mmul(w1[l]);
                INDArray hidden = Nd4j.exec(new org.nd4j.linalg.api.ops.impl.transforms.strict.GELU(pre, pre.ulike()));
                x = x.add(hidden.mmul(w2[l]));
            }
            return rmsNorm(x, gOut).mmul(head);
        }

        private INDArray rmsNorm(INDArray x, INDArray g) {
            return MlaV3Decoder.rmsNorm(x, g, attn.rmsEps);
        }

        /** Closes the caches (frees device memory of device caches). */
        @Override
        public void close() {
            for (KvCache c : caches) c.close();
        }
    }
}
