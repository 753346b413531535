package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.ops.Attention;
import org.mla4j.ops.AttentionBp;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.IndexerScores;
import org.mla4j.ops.IndexerScoresBp;
import org.mla4j.ops.IndexerTopK;
import org.mla4j.ops.KvAppend;
import org.mla4j.ops.KvDequantize;
import org.mla4j.ops.KvQuantize;
import org.mla4j.ops.Rope;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparseDecode;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.ops.SparsePrefillBp;
import org.mla4j.ops.TopK;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.CustomOp;
import org.nd4j.linalg.factory.Nd4j;

import static org.mla4j.tests.support.Compare.rejects;

/**
 * Bad input to every op family: each call must raise an {@link org.mla4j.MlaException} naming
 * the op and the argument (Java-side checks and the native library's own checks alike), and a
 * valid call afterwards must still work.
 */
class BadInputTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    private static final TestRandom R = TestRandom.create();

    private static INDArray f(long... shape) {
        int n = 1;
        for (long s : shape) n *= (int) s;
        return Nd.floats(R.normal(n), shape);
    }

    private static INDArray t(DataType type, long... shape) {
        return f(shape).castTo(type);
    }

    private static INDArray ints(int[] v, long... shape) {
        return Nd.ints(v, shape);
    }

    private static INDArray zerosInt(long... shape) {
        return Nd4j.create(DataType.INT, shape);
    }

    private static INDArray longs(long... shape) {
        return Nd4j.create(DataType.LONG, shape);
    }

    private static void run(CustomOp op) {
        Nd4j.exec(op);
    }

    // ---- dense attention --------------------------------------------------------------------------

    @Test
    void attention() {
        String op = "mla_attention";
        INDArray q = f(1, 3, 2, 8), k = f(1, 4, 1, 8), v = f(1, 4, 1, 6);
        Attention.Options o = new Attention.Options().causal(true);
        rejects(op, "q", () -> run(new Attention(f(3, 2, 8), k, v, null, null, null, null, o)));
        rejects(op, "q", () -> run(new Attention(t(DataType.INT, 1, 3, 2, 8), k, v, null, null, null, null, o)));
        rejects(op, "k", () -> run(new Attention(q, t(DataType.DOUBLE, 1, 4, 1, 8), v, null, null, null, null, o)));
        rejects(op, "d_qk", () -> run(new Attention(q, f(1, 4, 1, 7), v, null, null, null, null, o)));
        rejects(op, "h_kv", () -> run(new Attention(f(1, 3, 3, 8), f(1, 4, 2, 8), f(1, 4, 2, 6), null, null, null, null, o)));
        rejects(op, "v", () -> run(new Attention(q, k, f(1, 4, 2, 6), null, null, null, null, o)));
        rejects(op, "d_v", () -> run(new Attention(q, k, null, null, null, null, null,
                new Attention.Options().valueFromKey(9))));
        rejects(op, "k", () -> run(new Attention(q, f(2, 4, 1, 8), f(2, 4, 1, 6), null, null, null, null, o)));
        INDArray pq = f(5, 2, 8), pk = f(6, 1, 8), pv = f(6, 1, 6);
        rejects(op, "cuSeqlensQ", () -> run(new Attention(pq, pk, pv, ints(new int[] {1, 5}, 2), ints(new int[] {0, 6}, 2),
                null, null, o)));
        rejects(op, "cuSeqlensK", () -> run(new Attention(pq, pk, pv, ints(new int[] {0, 2, 5}, 3),
                ints(new int[] {0, 4, 3}, 3), null, null, o)));
        rejects(op, "cuSeqlensQ", () -> run(new Attention(pq, pk, pv, longs(2), ints(new int[] {0, 6}, 2), null, null, o)));
        rejects(op, "cuSeqlensQ", () -> run(new Attention(pq, pk, pv, ints(new int[] {0, 4}, 2), ints(new int[] {0, 6}, 2),
                null, null, o)));
        rejects(op, "sink", () -> run(new Attention(q, k, v, null, null, f(3), null, o)));
        rejects(op, "sink", () -> run(new Attention(q, k, v, null, null, t(DataType.DOUBLE, 2), null, o)));
        rejects(op, "window", () -> run(new Attention(q, k, v, null, null, null, null, new Attention.Options().window(-1))));
        rejects(op, "outPositions", () -> run(new Attention(q, k, v, null, null, null, zerosInt(2),
                new Attention.Options().rope(RopeConfig.interleaved(4, 10000)))));
        rejects(op, "inputs", () -> run(new Attention(q, null, v, null, null, null, null, o)));
        // native check: the VVPA rotation covers more dims than the output row has
        rejects(op, "out_rotation", () -> run(new Attention(q, k, v, null, null, null, zerosInt(1, 3),
                new Attention.Options().rope(RopeConfig.interleaved(8, 10000)))));
        // backward: its extra inputs are checked too
        Attention fwd = new Attention(q, k, v, null, null, null, null, o);
        INDArray[] fo = Nd4j.exec(fwd);
        rejects("mla_attention_bp", "dOut", () -> run(new AttentionBp(new INDArray[] {q, k, v, fo[0], fo[1], f(1, 3, 2, 5)}, fwd)));
        rejects("mla_attention_bp", "lse", () -> run(new AttentionBp(new INDArray[] {q, k, v, fo[0], fo[1].castTo(DataType.DOUBLE),
            f(1, 3, 2, 6)}, fwd)));
        // still alive
        INDArray[] ok = Nd4j.exec(new Attention(q, k, v, null, null, null, null, o));
        assertTrue(Double.isFinite(ok[0].sumNumber().doubleValue()));
    }

    // ---- dense decode -------------------------------------------------------------------------------

    @Test
    void denseDecode() {
        String op = "mla_dense_decode";
        INDArray q = f(2, 1, 4, 8), cache = f(4, 2, 1, 8);
        INDArray table = ints(new int[] {0, 1, 2, 3}, 2, 2), lens = ints(new int[] {3, 4}, 2);
        DenseDecode.Options o = new DenseDecode.Options(8).causal(true);
        rejects(op, "q", () -> run(new DenseDecode(f(2, 4, 8), cache, table, lens, null, null, o)));
        rejects(op, "q", () -> run(new DenseDecode(t(DataType.INT, 2, 1, 4, 8), cache, table, lens, null, null, o)));
        rejects(op, "kCache", () -> run(new DenseDecode(q, f(4, 2, 1, 7), table, lens, null, null, o)));
        rejects(op, "kCache", () -> run(new DenseDecode(q, t(DataType.DOUBLE, 4, 2, 1, 8), table, lens, null, null, o)));
        rejects(op, "blockTable", () -> run(new DenseDecode(q, cache, longs(2, 2), lens, null, null, o)));
        rejects(op, "blockTable", () -> run(new DenseDecode(q, cache, zerosInt(3, 2), lens, null, null, o)));
        rejects(op, "cacheSeqlens", () -> run(new DenseDecode(q, cache, table, zerosInt(3), null, null, o)));
        rejects(op, "cacheSeqlens", () -> run(new DenseDecode(q, cache, table, longs(2), null, null, o)));
        rejects(op, "d_v", () -> run(new DenseDecode(q, cache, table, lens, null, null, new DenseDecode.Options(9))));
        rejects(op, "h_kv", () -> run(new DenseDecode(q, f(4, 2, 3, 8), table, lens, null, null, o)));
        CacheLayout l = Caches.V32_SMALL;
        INDArray q80 = f(2, 1, 4, 80);
        rejects(op, "bytes per block", () -> run(new DenseDecode(q80, Nd4j.create(DataType.UINT8, 4, l.blockBytes(2) - 1),
                table, lens, null, null, new DenseDecode.Options(64).fp8(l, 2))));
        rejects(op, "kCache", () -> run(new DenseDecode(q80, f(4, l.blockBytes(2)), table, lens, null, null,
                new DenseDecode.Options(64).fp8(l, 2))));
        rejects(op, "d_qk", () -> run(new DenseDecode(q, Nd4j.create(DataType.UINT8, 4, CacheLayout.V32.blockBytes(2)), table, lens,
                null, null, new DenseDecode.Options(8).fp8(CacheLayout.V32, 2))));
        rejects(op, "sink", () -> run(new DenseDecode(q, cache, table, lens, t(DataType.HALF, 4), null, o)));
        rejects(op, "outPositions", () -> run(new DenseDecode(q, cache, table, lens, null, zerosInt(2, 2), o)));
        rejects(op, "inputs", () -> run(new DenseDecode(q, cache, null, lens, null, null, o)));
        // native checks on the block table and lengths
        rejects(op, "cache_seqlens", () -> run(new DenseDecode(q, cache, table, ints(new int[] {3, 5}, 2), null, null, o)));
        rejects(op, "cache_seqlens", () -> run(new DenseDecode(q, cache, table, ints(new int[] {-1, 4}, 2), null, null, o)));
        rejects(op, "block_table", () -> run(new DenseDecode(q, cache, ints(new int[] {0, 9, 2, 3}, 2, 2), lens, null, null, o)));
        rejects(op, "block_table", () -> run(new DenseDecode(q, cache, ints(new int[] {0, 1, -2, 3}, 2, 2), lens, null, null, o)));
        INDArray[] ok = Nd4j.exec(new DenseDecode(q, cache, table, lens, null, null, o));
        assertTrue(Double.isFinite(ok[0].sumNumber().doubleValue()));
    }

    // ---- sparse decode --------------------------------------------------------------------------------

    @Test
    void sparseDecode() {
        String op = "mla_sparse_decode";
        INDArray q = f(2, 1, 4, 16), cache = f(3, 8, 1, 16), idx = ints(new int[] {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 2, 1, 5);
        SparseDecode.Options o = new SparseDecode.Options(16);
        rejects(op, "indices", () -> run(new SparseDecode(q, cache, longs(2, 1, 5), null, null, null, null, null, null, o)));
        rejects(op, "indices", () -> run(new SparseDecode(q, cache, zerosInt(3, 1, 5), null, null, null, null, null, null, o)));
        rejects(op, "s_q", () -> run(new SparseDecode(q, cache, zerosInt(2, 2, 5), null, null, null, null, null, null, o)));
        rejects(op, "h_kv", () -> run(new SparseDecode(q, f(3, 8, 2, 16), idx, null, null, null, null, null, null, o)));
        CacheLayout l = Caches.V32_SMALL;
        INDArray q80 = f(2, 1, 4, 80);
        INDArray v32 = Nd4j.create(DataType.UINT8, 3, l.blockBytes(8));
        rejects(op, "bytes per block", () -> run(new SparseDecode(q80, Nd4j.create(DataType.UINT8, 3, l.blockBytes(8) + 4), idx,
                null, null, null, null, null, null, new SparseDecode.Options(64).fp8(l, 8))));
        rejects(op, "kCache", () -> run(new SparseDecode(q80, f(3, l.blockBytes(8)), idx, null, null, null, null, null, null,
                new SparseDecode.Options(64).fp8(l, 8))));
        // native check: a V32 cache's value is exactly its d_nope dims
        rejects(op, "d_v", () -> run(new SparseDecode(q80, v32, idx, null, null, null, null, null, null,
                new SparseDecode.Options(32).fp8(l, 8))));
        rejects(op, "d_v", () -> run(new SparseDecode(q, cache, idx, null, null, null, null, null, null, new SparseDecode.Options(17))));
        rejects(op, "topkLength", () -> run(new SparseDecode(q, cache, idx, zerosInt(3), null, null, null, null, null, o)));
        rejects(op, "extraCache", () -> run(new SparseDecode(q80, v32, idx, null, f(2, 4, 1, 80), zerosInt(2, 1, 3), null, null,
                null, new SparseDecode.Options(64).fp8(l, 8))));
        rejects(op, "extraIndices", () -> run(new SparseDecode(q, cache, idx, null, cache, zerosInt(2, 3), null, null, null, o)));
        rejects(op, "q", () -> run(new SparseDecode(f(2, 1, 1, 4, 16), cache, idx, null, null, null, null, null, null, o)));
        rejects(op, "q", () -> run(new SparseDecode(t(DataType.INT, 2, 1, 4, 16), cache, idx, null, null, null, null, null, null, o)));
        rejects(op, "sink", () -> run(new SparseDecode(q, cache, idx, null, null, null, null, f(5), null, o)));
        rejects(op, "outPositions", () -> run(new SparseDecode(q, cache, idx, null, null, null, null, null, zerosInt(2), o)));
        rejects(op, "inputs", () -> run(new SparseDecode(q, cache, null, null, null, null, null, null, null, o)));
        INDArray[] ok = Nd4j.exec(new SparseDecode(q, cache, idx, null, null, null, null, null, null, o));
        assertTrue(Double.isFinite(ok[0].sumNumber().doubleValue()));
    }

    // ---- sparse prefill -------------------------------------------------------------------------------

    @Test
    void sparsePrefill() {
        String op = "mla_sparse_prefill";
        INDArray q = f(3, 4, 16), kv = f(10, 1, 16), idx = ints(new int[] {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 2, 4, 6, 8}, 3, 1, 5);
        rejects(op, "q", () -> run(new SparsePrefill(f(3, 16), kv, idx, null, null, null, 16, 0, null)));
        rejects(op, "kv", () -> run(new SparsePrefill(q, f(10, 1, 15), idx, null, null, null, 15, 0, null)));
        rejects(op, "kv", () -> run(new SparsePrefill(q, t(DataType.DOUBLE, 10, 1, 16), idx, null, null, null, 16, 0, null)));
        rejects(op, "indices", () -> run(new SparsePrefill(q, kv, longs(3, 1, 5), null, null, null, 16, 0, null)));
        rejects(op, "h_kv", () -> run(new SparsePrefill(q, kv, zerosInt(3, 2, 5), null, null, null, 16, 0, null)));
        rejects(op, "s_q", () -> run(new SparsePrefill(q, kv, zerosInt(4, 1, 5), null, null, null, 16, 0, null)));
        rejects(op, "d_v", () -> run(new SparsePrefill(q, kv, idx, null, null, null, 17, 0, null)));
        rejects(op, "d_v", () -> run(new SparsePrefill(q, kv, idx, null, null, null, 0, 0, null)));
        rejects(op, "h_kv", () -> run(new SparsePrefill(f(3, 3, 16), f(10, 2, 16), zerosInt(3, 2, 5), null, null, null, 16, 0, null)));
        rejects(op, "topkLength", () -> run(new SparsePrefill(q, kv, idx, zerosInt(4), null, null, 16, 0, null)));
        rejects(op, "sink", () -> run(new SparsePrefill(q, kv, idx, null, t(DataType.DOUBLE, 4), null, 16, 0, null)));
        rejects(op, "outPositions", () -> run(new SparsePrefill(q, kv, idx, null, null, zerosInt(2), 16, 0,
                RopeConfig.interleaved(4, 10000))));
        rejects(op, "inputs", () -> run(new SparsePrefill(q, null, idx, null, null, null, 16, 0, null)));
        SparsePrefill fwd = new SparsePrefill(q, kv, idx, null, null, null, 16, 0, null);
        INDArray[] fo = Nd4j.exec(fwd);
        rejects("mla_sparse_prefill_bp", "dOut", () -> run(new SparsePrefillBp(new INDArray[] {q, kv, idx, fo[0], fo[2], f(3, 4, 8)},
                fwd)));
        rejects("mla_sparse_prefill_bp", "lse", () -> run(new SparsePrefillBp(new INDArray[] {q, kv, idx, fo[0],
            fo[2].castTo(DataType.DOUBLE), f(3, 4, 16)}, fwd)));
        INDArray[] ok = Nd4j.exec(new SparsePrefill(q, kv, idx, null, null, null, 16, 0, null));
        assertTrue(Double.isFinite(ok[0].sumNumber().doubleValue()));
    }

    // ---- KV cache ops ---------------------------------------------------------------------------------

    @Test
    void kvCache() {
        CacheLayout l = Caches.MODEL1_SMALL;
        long bytes = l.blockBytes(4);
        rejects("mla_kv_quantize", "kv", () -> run(new KvQuantize(f(4, 64), l)));
        rejects("mla_kv_quantize", "layout", () -> run(new KvQuantize(f(2, 4, 64), CacheLayout.PLAIN)));
        rejects("mla_kv_quantize", "d_qk", () -> run(new KvQuantize(f(2, 4, 60), l)));
        rejects("mla_kv_quantize", "kv", () -> run(new KvQuantize(t(DataType.INT, 2, 4, 64), l)));
        rejects("CacheLayout.v32", "dNope (10)", () -> CacheLayout.v32(10, 2, 4));
        rejects("CacheLayout.model1", "dRope", () -> CacheLayout.model1(48, 3, 16));
        rejects("CacheLayout.model1", "tile", () -> CacheLayout.model1(48, 16, 0));
        rejects("mla_kv_quantize", "inputs", () -> run(new KvQuantize(null, l)));
        rejects("mla_kv_dequantize", "bytes per block", () -> run(new KvDequantize(Nd4j.create(DataType.UINT8, 2, bytes + 1), l, 4,
                DataType.FLOAT)));
        rejects("mla_kv_dequantize", "cache", () -> run(new KvDequantize(f(2, bytes), l, 4, DataType.FLOAT)));
        rejects("mla_kv_dequantize", "output type", () -> run(new KvDequantize(Nd4j.create(DataType.UINT8, 2, bytes), l, 4,
                DataType.INT)));
        String op = "mla_kv_append";
        INDArray cache = f(4, 2, 1, 8), table = ints(new int[] {0, 1, 2, 3}, 2, 2);
        INDArray pristine = cache.dup();
        // native checks: past the block table's capacity, a block id outside the cache, two tokens on one slot
        rejects(op, "cache_seqlens", () -> run(KvAppend.inPlace(cache, table, ints(new int[] {3, 0}, 2), f(2, 2, 8),
                CacheLayout.PLAIN, 0)));
        rejects(op, "block_table", () -> run(KvAppend.inPlace(cache, ints(new int[] {0, 7, 2, 3}, 2, 2), ints(new int[] {1, 0}, 2),
                f(2, 2, 8), CacheLayout.PLAIN, 0)));
        rejects(op, "distinct cache slots", () -> run(KvAppend.inPlace(cache, ints(new int[] {0, 1, 0, 1}, 2, 2),
                ints(new int[] {0, 0}, 2), f(2, 1, 8), CacheLayout.PLAIN, 0)));
        rejects(op, "newKv", () -> run(KvAppend.inPlace(cache, table, ints(new int[] {0, 0}, 2), f(2, 1, 9), CacheLayout.PLAIN, 0)));
        rejects(op, "blockTable", () -> run(KvAppend.inPlace(cache, longs(2, 2), ints(new int[] {0, 0}, 2), f(2, 1, 8),
                CacheLayout.PLAIN, 0)));
        rejects(op, "cacheSeqlens", () -> run(KvAppend.inPlace(cache, table, zerosInt(3), f(2, 1, 8), CacheLayout.PLAIN, 0)));
        rejects(op, "inputs", () -> run(KvAppend.inPlace(cache, table, null, f(2, 1, 8), CacheLayout.PLAIN, 0)));
        rejects(op, "bytes per block", () -> run(KvAppend.inPlace(Nd4j.create(DataType.UINT8, 4, bytes - 8), table,
                ints(new int[] {0, 0}, 2), f(2, 1, 64), l, 4)));
        // the rejected appends wrote nothing
        assertEquals(pristine, cache);
        Nd4j.exec(KvAppend.inPlace(cache, table, ints(new int[] {1, 0}, 2), f(2, 1, 8), CacheLayout.PLAIN, 0));
        assertTrue(Double.isFinite(cache.sumNumber().doubleValue()));
    }

    @Test
    void pagedCacheDecodeNamesTheBatch() {
        PagedKvCache cache = PagedKvCache.plain(DataType.FLOAT, 8, 4, 8, 2, 4);
        cache.append(f(2, 3, 8));
        String op = "PagedKvCache.decode";
        rejects(op, "maxBatch 2", () -> cache.decode(f(3, 1, 2, 8), 8, true, 0.5));
        rejects(op, "q", () -> cache.decode(f(2, 2, 8), 8, true, 0.5));
        INDArray[] ok = cache.decode(f(2, 1, 2, 8), 8, true, 0.5);
        assertEquals(2, ok[0].size(0));
    }

    // ---- indexer and top-k ------------------------------------------------------------------------------

    @Test
    void indexerAndTopK() {
        INDArray q = f(2, 3, 4, 8), k = f(2, 5, 8), w = f(2, 3, 4);
        String op = "mla_indexer_scores";
        rejects(op, "q", () -> run(new IndexerScores(f(3, 4, 8), k, w, null, null, true)));
        rejects(op, "d", () -> run(new IndexerScores(q, f(2, 5, 7), w, null, null, true)));
        rejects(op, "w", () -> run(new IndexerScores(q, k, f(2, 3, 5), null, null, true)));
        rejects(op, "b", () -> run(new IndexerScores(q, f(1, 5, 8), w, null, null, true)));
        INDArray q8 = Nd4j.create(DataType.UINT8, 2, 3, 4, 8);
        rejects(op, "qScale", () -> run(new IndexerScores(q8, k, w, null, null, true)));
        rejects(op, "qScale", () -> run(new IndexerScores(q8, k, w, f(2, 3), null, true)));
        rejects(op, "kScale", () -> run(new IndexerScores(q, Nd4j.create(DataType.UINT8, 2, 5, 8), w, null,
                t(DataType.DOUBLE, 2, 5), true)));
        rejects(op, "q", () -> run(new IndexerScores(t(DataType.INT, 2, 3, 4, 8), k, w, null, null, true)));
        rejects("mla_indexer_topk", "topk", () -> run(new IndexerTopK(q, k, w, null, null, true, 0)));
        rejects("mla_indexer_topk", "w", () -> run(new IndexerTopK(q, k, f(2, 3), null, null, true, 2)));
        rejects("mla_topk", "k", () -> run(new TopK(f(3, 10), 0)));
        rejects("mla_topk", "scores", () -> run(new TopK(t(DataType.DOUBLE, 3, 10), 2)));
        rejects("mla_topk", "inputs", () -> run(new TopK(null, 2)));
        rejects("mla_indexer_scores_bp", "inputs", () -> run(new IndexerScoresBp(q, k, w, null, true)));
        rejects("mla_indexer_scores_bp", "dScores", () -> run(new IndexerScoresBp(q, k, w, f(2, 3, 4), true)));
        rejects("mla_indexer_scores_bp", "dScores", () -> run(new IndexerScoresBp(q, k, w, t(DataType.DOUBLE, 2, 3, 5), true)));
        INDArray ok = Nd4j.exec(new IndexerTopK(q, k, w, null, null, true, 2))[0];
        assertEquals(DataType.INT, ok.dataType());
    }

    // ---- RoPE -----------------------------------------------------------------------------------------

    @Test
    void ropeConfigIsCheckedWhereItIsBuilt() {
        String cls = "RopeConfig";
        rejects(cls, "ropeDim", () -> RopeConfig.interleaved(7, 10000));
        rejects(cls, "ropeDim", () -> RopeConfig.halfSplit(-2, 10000));
        rejects(cls, "ropeDim", () -> RopeConfig.interleaved(1026, 10000));
        rejects(cls, "theta", () -> RopeConfig.interleaved(8, 1.0));
        rejects(cls, "theta", () -> RopeConfig.interleaved(8, Double.NaN));
        rejects(cls, "style", () -> new RopeConfig(8, -1, 5, 10000, 1, 0, 32, 1));
        RopeConfig c = RopeConfig.interleaved(8, 10000);
        rejects(cls, "originalMaxPosition", () -> c.withYarn(4, 0, 32, 1));
        rejects(cls, "betaFast", () -> c.withYarn(4, 4096, 0, 1));
        rejects(cls, "yarnFactor", () -> c.withYarn(Double.POSITIVE_INFINITY, 4096, 32, 1));
        assertEquals(0, RopeConfig.none().ropeDim);
        assertEquals(40, c.withYarn(40, 4096, 32, 1).yarnFactor);
    }

    @Test
    void rope() {
        String op = "mla_rope";
        INDArray x = f(4, 2, 16), pos = ints(new int[] {0, 1, 2, 3}, 4);
        RopeConfig c = RopeConfig.interleaved(8, 10000);
        rejects(op, "x", () -> run(new Rope(f(16), ints(new int[] {0}, 1), c, false)));
        rejects(op, "x", () -> run(new Rope(f(1, 1, 4, 2, 16), pos, c, false)));
        rejects(op, "x", () -> run(new Rope(t(DataType.INT, 4, 2, 16), pos, c, false)));
        rejects(op, "positions", () -> run(new Rope(x, longs(4), c, false)));
        rejects(op, "positions", () -> run(new Rope(x, zerosInt(5), c, false)));
        rejects(op, "inputs", () -> run(new Rope(x, null, c, false)));
        rejects(op, "ropeDim", () -> run(new Rope(x, pos, RopeConfig.interleaved(18, 10000), false)));
        rejects(op, "rope dims", () -> run(new Rope(x, pos, c.atOffset(12), false)));
        INDArray ok = Nd4j.exec(new Rope(x, pos, c, false))[0];
        assertTrue(Double.isFinite(ok.sumNumber().doubleValue()));
    }
}
