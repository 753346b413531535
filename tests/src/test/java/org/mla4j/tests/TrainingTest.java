package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.layers.MlaLanguageModel;
import org.mla4j.layers.MlaV3Config;
import org.mla4j.ops.RopeConfig;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.ops.transforms.Transforms;

/** Training a small MLA language model really learns, and its decode path agrees with the graph. */
class TrainingTest {
    private static final MlaV3Config ATTN = new MlaV3Config(32, 2, 16, 16, 8, 8, 8, RopeConfig.interleaved(8, 10000), 1e-6);
    private static final String TEXT = "the quick brown fox jumps over the lazy dog; ";

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    private static int[] vocabIndex(char[] vocab) {
        int[] idx = new int[128];
        for (int i = 0; i < vocab.length; i++) idx[vocab[i]] = i;
        return idx;
    }

    private static char[] vocab() {
        return TEXT.chars().distinct().sorted().collect(StringBuilder::new, StringBuilder::appendCodePoint,
                StringBuilder::append).toString().toCharArray();
    }

    /** Windows of the repeated text: inputs and next-character targets [b, s]. */
    private static INDArray[] batch(int[] idx, int b, int s, int offset) {
        int[][] x = new int[b][s], y = new int[b][s];
        for (int i = 0; i < b; i++) {
            for (int t = 0; t < s; t++) {
                int at = (offset + 7 * i + t) % TEXT.length();
                x[i][t] = idx[TEXT.charAt(at)];
                y[i][t] = idx[TEXT.charAt((at + 1) % TEXT.length())];
            }
        }
        return new INDArray[] {Nd4j.createFromArray(x), Nd4j.createFromArray(y)};
    }

    @Test
    void fixedSeedTrainingReachesALossBoundWellBelowTheStart() throws Exception {
        char[] vocab = vocab();
        int[] idx = vocabIndex(vocab);
        MlaLanguageModel model = new MlaLanguageModel(vocab.length, 1, 64, ATTN, 5);
        model.configureTraining(new Adam(1e-2));
        INDArray[] probe = batch(idx, 4, 24, 3);
        double start = model.loss(probe[0], probe[1]);
        List<Double> losses = new ArrayList<>();
        for (int step = 0; step < 40; step++) {
            INDArray[] xy = batch(idx, 4, 24, step * 5);
            losses.add(model.trainStep(xy[0], xy[1]));
        }
        double end = model.loss(probe[0], probe[1]);
        assertTrue(start > 0.7 * Math.log(vocab.length), "initial loss " + start + " should be near ln(V) = " + Math.log(vocab.length));
        assertTrue(end < 0.35 * start, "loss after 40 steps " + end + " should be well below the start " + start
                + " (trajectory " + losses + ")");

        File file = Files.createTempFile("mla4j-lm", ".sdz").toFile();
        file.deleteOnExit();
        model.save(file);
        MlaLanguageModel loaded = MlaLanguageModel.load(file, vocab.length, 1, 64, ATTN);
        assertEquals(end, loaded.loss(probe[0], probe[1]), 1e-6, "a saved and reloaded model computes the same loss");

        // The saved graph itself, loaded with its training state, keeps training: SameDiff
        // rebuilds the gradient graph from copies of the plugin ops.
        SameDiff graph = SameDiff.load(file, true);
        Map<String, INDArray> feed = Map.of("tokens", probe[0], "positions", positions(probe[0]), "labels", probe[1].reshape(-1));
        double before = graph.output(feed, "loss").get("loss").getDouble(0);
        assertEquals(end, before, 1e-6, "SameDiff.load gives the same loss");
        for (int i = 0; i < 5; i++) {
            graph.fit(new org.nd4j.linalg.dataset.MultiDataSet(new INDArray[] {probe[0], positions(probe[0])},
                    new INDArray[] {probe[1].reshape(-1)}));
        }
        double after = graph.output(feed, "loss").get("loss").getDouble(0);
        assertTrue(after < before, "fit() on the loaded graph lowers its loss: " + before + " -> " + after);
    }

    private static INDArray positions(INDArray tokens) {
        INDArray pos = Nd4j.create(DataType.INT, tokens.size(0), tokens.size(1));
        for (int t = 0; t < tokens.size(1); t++) pos.get(NDArrayIndex.all(), NDArrayIndex.point(t)).assign(t);
        return pos;
    }

    @Test
    void decodePathGivesTheSameNextTokenDistributionAsTheFullForward() {
        char[] vocab = vocab();
        int[] idx = vocabIndex(vocab);
        MlaLanguageModel model = new MlaLanguageModel(vocab.length, 2, 48, ATTN, 9);
        INDArray tokens = batch(idx, 2, 17, 4)[0];
        INDArray full = model.logits(tokens);
        MlaLanguageModel.Generator gen = model.generator(dQk -> PagedKvCache.plain(DataType.FLOAT, dQk, 3, 16, 2, 8));
        double worst = 0;
        for (int t = 0; t < 17; t++) {
            int[] step = {tokens.getInt(0, t), tokens.getInt(1, t)};
            INDArray p = Transforms.softmax(gen.step(step).castTo(DataType.DOUBLE));
            INDArray q = Transforms.softmax(full.get(NDArrayIndex.all(), NDArrayIndex.point(t), NDArrayIndex.all())
                    .castTo(DataType.DOUBLE));
            worst = Math.max(worst, Transforms.abs(p.sub(q)).maxNumber().doubleValue());
        }
        assertTrue(worst < 1e-5, "decode vs full forward: max next-token probability difference " + worst);
    }
}
