package org.mla4j.samples;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.KvQuantize;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Random inputs of the benchmark: dense tensors, paged KV caches, sparse index sets. */
final class BenchData {
    private final Random random;

    BenchData(long seed) {
        random = new Random(seed);
        Nd4j.getRandom().setSeed(seed);
    }

    /** Standard normal values of the given type. */
    INDArray randn(DataType type, long... shape) {
        INDArray a = Nd4j.randn(DataType.FLOAT, shape);
        return type == DataType.FLOAT ? a : a.castTo(type);
    }

    /** Random float8_e4m3 bytes (UINT8), never the NaN encodings 0x7F and 0xFF. */
    INDArray fp8(long... shape) {
        long n = 1;
        for (long s : shape) n *= s;
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) {
            int r = random.nextInt(254);
            v[i] = r < 127 ? r : r + 1;
        }
        return Nd4j.createFromArray(v).reshape(shape).castTo(DataType.UINT8);
    }

    /** A float32 array filled with one value. */
    static INDArray full(float value, long... shape) {
        return Nd4j.valueArrayOf(shape, value, DataType.FLOAT);
    }

    /**
     * A paged cache: {@code b} requests of {@code tokens} tokens each, in blocks of
     * {@code blockSize}, block ids shuffled over the pool as a serving engine would leave them.
     */
    static final class Paged {
        final INDArray cache;
        final INDArray blockTable;
        final INDArray seqlens;
        final int[][] table;
        final int blockSize;
        final int tokensPerRequest;
        /** Bytes one token row takes in the cache's own format. */
        final double rowBytes;

        Paged(INDArray cache, int[][] table, int blockSize, int tokens, double rowBytes) {
            this.cache = cache;
            this.table = table;
            this.blockTable = Nd4j.createFromArray(table);
            int[] lens = new int[table.length];
            Arrays.fill(lens, tokens);
            this.seqlens = Nd4j.createFromArray(lens);
            this.blockSize = blockSize;
            this.tokensPerRequest = tokens;
            this.rowBytes = rowBytes;
        }

        /** Cache position of token t of request i: block * block_size + offset. */
        int slot(int i, int t) {
            return table[i][t / blockSize] * blockSize + t % blockSize;
        }
    }

    /** Shuffled block table: request i owns {@code blocksPerRequest} distinct blocks of the pool. */
    private int[][] blockTable(int b, int blocksPerRequest) {
        List<Integer> ids = new ArrayList<>();
        for (int i = 0; i < b * blocksPerRequest; i++) ids.add(i);
        Collections.shuffle(ids, random);
        int[][] t = new int[b][blocksPerRequest];
        for (int i = 0; i < b; i++) for (int j = 0; j < blocksPerRequest; j++) t[i][j] = ids.get(i * blocksPerRequest + j);
        return t;
    }

    /**
     * A PLAIN cache {@code [num_blocks, block_size, 1, d_qk]} of {@code type} holding
     * {@code tokens} tokens per request, room for {@code capacity} (>= tokens).
     */
    Paged plainCache(DataType type, int b, int tokens, int capacity, int blockSize, int dQk) {
        int blocks = (capacity + blockSize - 1) / blockSize;
        INDArray cache = randn(type, (long) b * blocks, blockSize, 1, dQk);
        return new Paged(cache, blockTable(b, blocks), blockSize, tokens, (double) dQk * type.width());
    }

    /** An FP8 cache in {@code layout}, quantised from random rows by mla_kv_quantize. */
    Paged fp8Cache(CacheLayout layout, int b, int tokens, int capacity, int blockSize) {
        int blocks = (capacity + blockSize - 1) / blockSize;
        INDArray rows = randn(DataType.FLOAT, (long) b * blocks, blockSize, layout.dQk());
        INDArray cache = Nd4j.exec(new KvQuantize(rows, layout))[0];
        return new Paged(cache, blockTable(b, blocks), blockSize, tokens, (double) layout.blockBytes(blockSize) / blockSize);
    }

    /**
     * Sparse decode indices {@code int32 [b, s_q, topk]}: for each query row, topk distinct
     * tokens of its request, drawn at random, written as cache slots.
     */
    int[][][] decodeIndices(Paged p, int b, int sQ, int topk) {
        int[][][] idx = new int[b][sQ][];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j < sQ; j++) {
                int[] tokens = distinct(p.tokensPerRequest, topk);
                for (int t = 0; t < topk; t++) tokens[t] = p.slot(i, tokens[t]);
                idx[i][j] = tokens;
            }
        }
        return idx;
    }

    /** Sparse prefill indices {@code int32 [s_q, 1, topk]}: topk distinct rows of [0, s_kv) per query. */
    int[][][] prefillIndices(int sQ, int sKv, int topk) {
        int[][][] idx = new int[sQ][1][];
        for (int i = 0; i < sQ; i++) idx[i][0] = distinct(sKv, topk);
        return idx;
    }

    /** k distinct values of [0, n) in random order (partial Fisher-Yates). */
    int[] distinct(int n, int k) {
        if (k > n) throw new IllegalArgumentException("cannot draw " + k + " distinct values from " + n);
        int[] pool = new int[n];
        for (int i = 0; i < n; i++) pool[i] = i;
        for (int i = 0; i < k; i++) {
            int j = i + random.nextInt(n - i);
            int tmp = pool[i];
            pool[i] = pool[j];
            pool[j] = tmp;
        }
        return Arrays.copyOf(pool, k);
    }

    /** Flattens an index set (for counting unique rows). */
    static int[] flatten(int[][][] idx) {
        int n = 0;
        for (int[][] a : idx) for (int[] r : a) n += r.length;
        int[] out = new int[n];
        int at = 0;
        for (int[][] a : idx) for (int[] r : a) {
            System.arraycopy(r, 0, out, at, r.length);
            at += r.length;
        }
        return out;
    }

    /** Positions 0..s-1 for each of b sequences, int32 [b, s]. */
    static INDArray positions(int b, int s) {
        int[][] p = new int[b][s];
        for (int i = 0; i < b; i++) for (int t = 0; t < s; t++) p[i][t] = t;
        return Nd4j.createFromArray(p);
    }

    /** Bytes of an array in its own type. */
    static double bytes(INDArray a) {
        return (double) a.length() * a.dataType().width();
    }
}
