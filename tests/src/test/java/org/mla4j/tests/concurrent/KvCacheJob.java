package org.mla4j.tests.concurrent;

import java.util.ArrayList;
import java.util.List;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.ops.CacheLayout;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A decode loop on a {@link PagedKvCache} of the calling thread's own: a prompt appended at
 * once, then token after token appended and decoded, then every sequence reset and one more
 * step. Caches are not shared (a cache is not thread-safe); the inputs are. Each decode's out
 * and lse must equal the single-threaded loop's.
 */
final class KvCacheJob implements StressJob {
    private static final int BATCH = 3, PROMPT = 70, STEPS = 6, HEADS = 4, D_V = 32, BLOCK = 16;

    private final String name;
    private final CacheLayout layout;
    private final DataType plainType;
    private final INDArray prompt;
    private final INDArray[] rows;
    private final INDArray[] queries;
    private final List<INDArray[]> expected;

    private KvCacheJob(String name, CacheLayout layout, DataType plainType, TestRandom r) {
        this.name = name;
        this.layout = layout;
        this.plainType = plainType;
        int d = dQk();
        DataType rowType = layout.isFp8() ? DataType.FLOAT : plainType;
        DataType qType = layout.isFp8() ? DataType.FLOAT : plainType;
        prompt = Nd.array(r.normal(BATCH * PROMPT * d, 1.0), rowType, BATCH, PROMPT, d);
        rows = new INDArray[STEPS + 1];
        queries = new INDArray[STEPS + 1];
        for (int s = 0; s <= STEPS; s++) {
            rows[s] = Nd.array(r.normal(BATCH * d, 1.0), rowType, BATCH, 1, d);
            queries[s] = Nd.array(r.normal(BATCH * HEADS * d, 1.0), qType, BATCH, 1, HEADS, d);
        }
        expected = loop();
    }

    static List<StressJob> all(TestRandom r) {
        return List.of(
                new KvCacheJob("paged cache BFLOAT16", CacheLayout.PLAIN, DataType.BFLOAT16, r),
                new KvCacheJob("paged cache FP8 V32", CacheLayout.v32(64, 16, 32), null, r),
                new KvCacheJob("paged cache FP8 MODEL1", CacheLayout.model1(48, 16, 16), null, r));
    }

    private int dQk() {
        return layout.isFp8() ? layout.dQk() : 48;
    }

    private PagedKvCache newCache() {
        int maxBlocks = (PROMPT + STEPS + BLOCK - 1) / BLOCK + 1;
        return layout.isFp8()
                ? PagedKvCache.fp8(layout, BLOCK, BATCH * maxBlocks, BATCH, maxBlocks)
                : PagedKvCache.plain(plainType, dQk(), BLOCK, BATCH * maxBlocks, BATCH, maxBlocks);
    }

    /** The decode loop; returns each step's [out, lse]. */
    private List<INDArray[]> loop() {
        PagedKvCache cache = newCache();
        List<INDArray[]> results = new ArrayList<>();
        double scale = 1.0 / Math.sqrt(dQk());
        cache.append(prompt);
        for (int s = 0; s < STEPS; s++) {
            cache.append(rows[s]);
            results.add(cache.decode(queries[s], D_V, true, scale));
        }
        for (int i = 0; i < BATCH; i++) cache.reset(i);
        cache.append(rows[STEPS]);
        results.add(cache.decode(queries[STEPS], D_V, true, scale));
        return results;
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public void run(int iteration) {
        List<INDArray[]> actual = loop();
        for (int s = 0; s < expected.size(); s++) {
            for (int o = 0; o < 2; o++) {
                Compare.identical(name + (o == 0 ? " out" : " lse"), actual.get(s)[o], expected.get(s)[o], "step " + s);
            }
        }
    }
}
