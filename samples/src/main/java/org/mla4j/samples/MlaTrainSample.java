package org.mla4j.samples;

import java.io.File;
import java.util.Random;
import org.mla4j.Mla4j;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.layers.MlaLanguageModel;
import org.mla4j.ops.CacheLayout;
import org.mla4j.layers.MlaV3Config;
import org.mla4j.ops.RopeConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.ops.transforms.Transforms;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Trains a tiny character-level language model with DeepSeek-V3-style MLA attention on the
 * embedded corpus (Genesis, KJV), in SameDiff on the CPU, then reports held-out perplexity,
 * saves and reloads the model, checks that decode from paged KV caches in BF16 and FP8 gives
 * the same next-token distributions as the full forward, and generates text with the BF16
 * paged KV cache.
 *
 * <p>Options: {@code --steps}, {@code --batch}, {@code --seq-len} (defaults 300, 16, 64),
 * {@code --help}.
 */
@Command(name = "MlaTrainSample", sortOptions = false, showDefaultValues = true,
        description = "Trains a tiny MLA character language model on the embedded corpus, evaluates, saves, "
                + "reloads and generates text from the paged KV cache.")
public final class MlaTrainSample {
    @Option(names = "--steps", description = "training steps")
    int steps = 300;
    @Option(names = "--batch", description = "sequences per step")
    int batch = 16;
    @Option(names = "--seq-len", description = "tokens per sequence")
    int seqLen = 64;
    @Option(names = {"-h", "--help"}, usageHelp = true, description = "show this help")
    boolean help;

    public static void main(String[] args) throws Exception {
        MlaTrainSample o = new MlaTrainSample();
        if (!SampleCli.parse(o, args)) return;
        int steps = o.steps, batch = o.batch, seqLen = o.seqLen;
        Mla4j.install();
        CharCorpus corpus = CharCorpus.embedded();
        int vocab = corpus.vocab.length;
        MlaV3Config attn = new MlaV3Config(128, 4, 64, 64, 32, 16, 32, RopeConfig.interleaved(16, 10000), 1e-6);
        int layers = 2, mlp = 256;

        System.out.println("mla4j: train a tiny MLA character language model");
        System.out.println("  native library : " + Mla4j.nativeInfo());
        System.out.printf("  corpus         : Genesis (KJV), %d characters, vocabulary %d, %d train / %d held out%n",
                corpus.text.length(), vocab, corpus.trainEnd, corpus.text.length() - corpus.trainEnd);
        System.out.printf("  model          : %d layers, %s, MLP %d%n", layers, attn, mlp);
        System.out.printf("  training       : %d steps of %d x %d tokens, Adam 3e-3; uniform loss ln(%d) = %.3f%n%n",
                steps, batch, seqLen, vocab, Math.log(vocab));

        MlaLanguageModel model = new MlaLanguageModel(vocab, layers, mlp, attn, 42);
        model.configureTraining(new Adam(3e-3));
        Random rnd = new Random(1234);
        Random evalRnd = new Random(99);
        double before = heldOutLoss(model, corpus, evalRnd, batch, seqLen);
        System.out.printf("held-out loss before training: %.3f (perplexity %.1f)%n", before, Math.exp(before));
        System.out.println("  step | train loss | tokens/s | elapsed");
        System.out.println("-------+------------+----------+--------");
        long t0 = System.nanoTime();
        double smooth = Double.NaN;
        for (int step = 1; step <= steps; step++) {
            INDArray[] xy = corpus.batch(rnd, batch, seqLen, false);
            double loss = model.trainStep(xy[0], xy[1]);
            smooth = Double.isNaN(smooth) ? loss : 0.9 * smooth + 0.1 * loss;
            if (step % 20 == 0 || step == 1 || step == steps) {
                double sec = (System.nanoTime() - t0) / 1e9;
                System.out.printf(" %5d | %10.3f | %8.0f | %5.1f s%n", step, smooth, step * batch * seqLen / sec, sec);
            }
        }
        double after = heldOutLoss(model, corpus, evalRnd, batch, seqLen);
        System.out.printf("%nheld-out loss after training: %.3f (perplexity %.2f, from %.1f)%n", after, Math.exp(after), Math.exp(before));

        File file = new File(System.getProperty("java.io.tmpdir"), "mla4j-char-lm.sdz");
        model.save(file);
        MlaLanguageModel loaded = MlaLanguageModel.load(file, vocab, layers, mlp, attn);
        INDArray[] probe = corpus.batch(new Random(5), 2, seqLen, true);
        double lossSaved = model.loss(probe[0], probe[1]), lossLoaded = loaded.loss(probe[0], probe[1]);
        System.out.printf("saved to %s (%d KB); reloaded model loss %.6f vs %.6f%n", file, file.length() / 1024,
                lossLoaded, lossSaved);

        // Decode the prompt token by token from paged KV caches (absorbed MLA, one latent row per
        // token) and compare each next-token distribution with the full-sequence forward.
        String prompt = "And God said unto Abraham, ";
        int[] ids = corpus.encode(prompt);
        INDArray full = loaded.logits(Nd4j.createFromArray(new int[][] {ids}).castTo(DataType.INT));
        CacheLayout fp8 = CacheLayout.v32(attn.kvLora, attn.qkRope, 16);
        MlaLanguageModel.Generator genBf16 = loaded.generator(dQk -> PagedKvCache.plain(DataType.BFLOAT16, dQk, 16, 32, 1, 32));
        MlaLanguageModel.Generator genFp8 = loaded.generator(dQk -> PagedKvCache.fp8(fp8, 16, 32, 1, 32));
        System.out.println("\ndecode from the paged KV cache vs the full forward, over the prompt:");
        System.out.println(" cache       | bytes/token/layer | max next-token probability difference");
        System.out.println("-------------+-------------------+---------------------------------------");
        INDArray logits = null;
        double[] worst = new double[2];
        for (int t = 0; t < ids.length; t++) {
            INDArray q = Transforms.softmax(full.get(NDArrayIndex.point(0), NDArrayIndex.point(t), NDArrayIndex.all())
                    .reshape(1, vocab).castTo(DataType.DOUBLE));
            logits = genBf16.step(new int[] {ids[t]});
            worst[0] = Math.max(worst[0], Transforms.abs(Transforms.softmax(logits.castTo(DataType.DOUBLE)).sub(q)).maxNumber().doubleValue());
            INDArray l8 = genFp8.step(new int[] {ids[t]});
            worst[1] = Math.max(worst[1], Transforms.abs(Transforms.softmax(l8.castTo(DataType.DOUBLE)).sub(q)).maxNumber().doubleValue());
        }
        System.out.printf(" BF16        | %17d | %.2e%n", 2 * attn.dQkAbsorbed(), worst[0]);
        System.out.printf(" FP8 (V32)   | %17d | %.2e%n", fp8.blockBytes(16) / 16, worst[1]);

        StringBuilder text = new StringBuilder(prompt);
        Random sampler = new Random(7);
        for (int i = 0; i < 240; i++) {
            int next = sample(logits, 0.7, sampler);
            text.append(corpus.vocab[next]);
            if (genBf16.length() >= seqLen) {
                // The model was trained on windows of seqLen: start the cache again from the
                // last half window instead of running past the positions it has seen.
                genBf16.reset();
                int[] tail = corpus.encode(text.substring(text.length() - seqLen / 2, text.length() - 1));
                for (int id : tail) genBf16.step(new int[] {id});
            }
            logits = genBf16.step(new int[] {next});
        }
        System.out.println("\ngenerated from the BF16 paged cache (temperature 0.7):\n" + text + "\n");
        boolean learned = after < before - 1.0;
        System.out.println(learned ? "training reduced the held-out loss." : "WARNING: the held-out loss did not fall by 1 nat");
    }

    static double heldOutLoss(MlaLanguageModel m, CharCorpus c, Random rnd, int batch, int seqLen) {
        double sum = 0;
        int n = 4;
        for (int i = 0; i < n; i++) {
            INDArray[] xy = c.batch(rnd, batch, seqLen, true);
            sum += m.loss(xy[0], xy[1]);
        }
        return sum / n;
    }

    static int sample(INDArray logits, double temperature, Random rnd) {
        double[] l = logits.castTo(DataType.DOUBLE).reshape(-1).toDoubleVector();
        double max = Double.NEGATIVE_INFINITY;
        for (double v : l) max = Math.max(max, v);
        double sum = 0;
        for (int i = 0; i < l.length; i++) sum += (l[i] = Math.exp((l[i] - max) / temperature));
        double r = rnd.nextDouble() * sum;
        for (int i = 0; i < l.length; i++) if ((r -= l[i]) <= 0) return i;
        return l.length - 1;
    }
}
