package org.mla4j.tests.concurrent;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.ops.Attention;
import org.mla4j.ops.AttentionBp;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.KvQuantize;
import org.mla4j.ops.Rope;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.TopK;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Eager mla4j ops ({@code Nd4j.exec} of a fresh op object per call) on inputs shared by every
 * thread: attention forward and backward, dense decode over one shared paged cache (with
 * enough keys that the kernel splits them over the worker pool), top-k, RoPE and FP8
 * quantisation. Each call's outputs must equal, bit for bit, those of the single-threaded
 * call made when the job was built.
 */
final class EagerOpJobs {
    private EagerOpJobs() {}

    static List<StressJob> all(TestRandom r) {
        List<StressJob> jobs = new ArrayList<>();
        jobs.add(attentionForward(r));
        jobs.add(attentionBackward(r));
        jobs.add(denseDecodeSplitKeys(r));
        jobs.add(topK(r));
        jobs.add(rope(r));
        jobs.add(quantize(r));
        return jobs;
    }

    /** A job that runs {@code op} and compares its outputs with the first run's. */
    static StressJob of(String name, Supplier<INDArray[]> op) {
        INDArray[] expected = op.get();
        return new StressJob() {
            @Override public String name() { return name; }

            @Override public void run(int iteration) {
                INDArray[] actual = op.get();
                for (int i = 0; i < expected.length; i++) {
                    Compare.identical(name + " output " + i, actual[i], expected[i], "concurrent run");
                }
            }
        };
    }

    private static INDArray floats(TestRandom r, long... shape) {
        long n = 1;
        for (long s : shape) n *= s;
        return Nd.floats(r.normal((int) n, 1.0), shape);
    }

    private static StressJob attentionForward(TestRandom r) {
        INDArray q = floats(r, 2, 48, 4, 24), k = floats(r, 2, 48, 2, 24), v = floats(r, 2, 48, 2, 16);
        return of("attention forward (causal, grouped heads)", () -> Nd4j.exec(
                new Attention(q, k, v, null, null, null, null, new Attention.Options().causal(true))));
    }

    private static StressJob attentionBackward(TestRandom r) {
        INDArray q = floats(r, 1, 40, 4, 16), k = floats(r, 1, 40, 4, 16), v = floats(r, 1, 40, 4, 8);
        Attention.Options o = new Attention.Options().causal(true);
        INDArray[] outLse = Nd4j.exec(new Attention(q, k, v, null, null, null, null, o));
        INDArray dOut = floats(r, 1, 40, 4, 8);
        return of("attention backward", () -> Nd4j.exec(new AttentionBp(
                new INDArray[] {q, k, v, outLse[0], outLse[1], dOut},
                new Attention(q, k, v, null, null, null, null, o))));
    }

    /** One sequence, one KV head, 1500 keys: decode cuts the keys into splits run in parallel. */
    private static StressJob denseDecodeSplitKeys(TestRandom r) {
        PagedKvCache cache = PagedKvCache.plain(DataType.FLOAT, 40, 64, 32, 1, 32);
        cache.append(floats(r, 1, 1500, 40));
        INDArray q = floats(r, 1, 2, 8, 40);
        INDArray table = cache.blockTable().dup(), lens = cache.seqlens().dup();
        DenseDecode.Options o = new DenseDecode.Options(32).causal(true).softmaxScale(0.15);
        return of("dense decode (split keys)", () -> Nd4j.exec(
                new DenseDecode(q, cache.data(), table, lens, null, null, o)));
    }

    private static StressJob topK(TestRandom r) {
        INDArray scores = floats(r, 16, 700);
        return of("top-k", () -> Nd4j.exec(new TopK(scores, 37)));
    }

    private static StressJob rope(TestRandom r) {
        INDArray x = floats(r, 2, 30, 4, 32);
        int[] pos = new int[60];
        for (int i = 0; i < pos.length; i++) pos[i] = (i * 7) % 97;
        INDArray positions = Nd.ints(pos, 2, 30);
        RopeConfig rc = RopeConfig.interleaved(16, 10000).withYarn(4, 64, 32, 1);
        return of("rope (YaRN)", () -> Nd4j.exec(new Rope(x, positions, rc, false)));
    }

    private static StressJob quantize(TestRandom r) {
        CacheLayout l = CacheLayout.v32(64, 16, 32);
        INDArray kv = floats(r, 6, 16, l.dQk());
        return of("FP8 V32 quantise", () -> Nd4j.exec(new KvQuantize(kv, l)));
    }
}
