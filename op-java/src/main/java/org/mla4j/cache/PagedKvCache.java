package org.mla4j.cache;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Deque;
import org.mla4j.MlaException;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.KvAppend;
import org.mla4j.ops.RopeConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * A host-resident paged KV cache for decode: a pool of page blocks shared by up to
 * {@code maxBatch} sequences, each sequence owning a list of blocks (its block table row).
 * Rows hold {@code dQk} values of one KV head, in BFLOAT16 (or another float type: PLAIN) or
 * in an FP8 layout (V32, MODEL1). Appending takes blocks from the free pool as sequences grow;
 * {@link #reset(int)} gives a sequence's blocks back.
 *
 * <pre>{@code
 * PagedKvCache cache = PagedKvCache.plain(DataType.BFLOAT16, 80, 64, 256, 4, 32);
 * cache.append(newRows);                         // [b, 1, 80] for one token per sequence
 * INDArray[] outLse = cache.decode(q, 64, true, scale); // dense decode over everything cached
 * }</pre>
 *
 * Not thread-safe: one decoding loop owns a cache.
 */
public final class PagedKvCache {
    private final CacheLayout layout;
    private final int dQk;
    private final int blockSize;
    private final int maxBatch;
    private final int maxBlocksPerSeq;
    private final INDArray data;
    private final INDArray blockTable;
    private final INDArray seqlensArray;
    private final int[] seqlens;
    private final int[][] blocks;
    private final Deque<Integer> free = new ArrayDeque<>();

    private PagedKvCache(CacheLayout layout, DataType plainType, int dQk, int blockSize, int numBlocks,
                         int maxBatch, int maxBlocksPerSeq) {
        if (dQk <= 0 || blockSize <= 0 || numBlocks <= 0 || maxBatch <= 0 || maxBlocksPerSeq <= 0) {
            throw new MlaException("PagedKvCache: dQk, blockSize, numBlocks, maxBatch and maxBlocksPerSeq must be > 0, got "
                    + dQk + ", " + blockSize + ", " + numBlocks + ", " + maxBatch + ", " + maxBlocksPerSeq);
        }
        if (layout.isFp8() && layout.dQk() != dQk) {
            throw new MlaException("PagedKvCache: layout " + layout + " holds " + layout.dQk() + " dims, not " + dQk);
        }
        this.layout = layout;
        this.dQk = dQk;
        this.blockSize = blockSize;
        this.maxBatch = maxBatch;
        this.maxBlocksPerSeq = maxBlocksPerSeq;
        this.data = layout.isFp8()
                ? Nd4j.zeros(DataType.UINT8, numBlocks, layout.blockBytes(blockSize))
                : Nd4j.zeros(plainType, numBlocks, blockSize, 1, dQk);
        this.blockTable = Nd4j.zeros(DataType.INT, maxBatch, maxBlocksPerSeq);
        this.seqlensArray = Nd4j.zeros(DataType.INT, maxBatch);
        this.seqlens = new int[maxBatch];
        this.blocks = new int[maxBatch][0];
        for (int i = 0; i < numBlocks; i++) free.add(i);
    }

    /** A cache of plain rows of {@code type} (BFLOAT16 for decode, FLOAT or DOUBLE for checks). */
    public static PagedKvCache plain(DataType type, int dQk, int blockSize, int numBlocks, int maxBatch,
                                     int maxBlocksPerSeq) {
        return new PagedKvCache(CacheLayout.PLAIN, type, dQk, blockSize, numBlocks, maxBatch, maxBlocksPerSeq);
    }

    /** A cache in an FP8 layout (V32 or MODEL1, default or custom sizes). */
    public static PagedKvCache fp8(CacheLayout layout, int blockSize, int numBlocks, int maxBatch,
                                   int maxBlocksPerSeq) {
        if (!layout.isFp8()) throw new MlaException("PagedKvCache.fp8: layout must be V32 or MODEL1, got " + layout);
        return new PagedKvCache(layout, null, layout.dQk(), blockSize, numBlocks, maxBatch, maxBlocksPerSeq);
    }

    public CacheLayout layout() { return layout; }
    public int blockSize() { return blockSize; }
    public int dQk() { return dQk; }
    public int maxBatch() { return maxBatch; }
    public int freeBlocks() { return free.size(); }

    /** Tokens cached for sequence i. */
    public int length(int i) { return seqlens[i]; }

    /** The cache array (PLAIN: [blocks, block_size, 1, dQk]; FP8: UINT8 [blocks, block_bytes]). */
    public INDArray data() { return data; }

    public INDArray blockTable() { return blockTable; }

    public INDArray seqlens() { return seqlensArray; }

    /** Bytes the cache pool takes. */
    public long bytes() { return data.length() * data.dataType().width(); }

    /**
     * Appends {@code rows [b, n, dQk]} to sequences 0..b-1 (n tokens each), allocating blocks.
     */
    public void append(INDArray rows) {
        if (rows.rank() != 3 || rows.size(2) != dQk || rows.size(0) > maxBatch) {
            throw new MlaException("PagedKvCache.append: rows must be [b <= " + maxBatch + ", n, " + dQk + "], got "
                    + Arrays.toString(rows.shape()));
        }
        int b = (int) rows.size(0), n = (int) rows.size(1);
        for (int i = 0; i < b; i++) ensureCapacity(i, seqlens[i] + n);
        Nd4j.exec(KvAppend.inPlace(data, tableRows(b), lengths(b), rows, layout, blockSize));
        for (int i = 0; i < b; i++) {
            seqlens[i] += n;
            seqlensArray.putScalar(i, seqlens[i]);
        }
    }

    /**
     * Dense decode of {@code q [b, s_q, h_q, dQk]} against sequences 0..b-1.
     *
     * @return [out [b, s_q, h_q, dV], lse float32 [b, h_q, s_q]]
     */
    public INDArray[] decode(INDArray q, int dV, boolean causal, double softmaxScale) {
        return decode(q, dV, causal, softmaxScale, null, null, null);
    }

    /** Dense decode with an optional sink [h_q] and VVPA output rotation (positions [b, s_q]). */
    public INDArray[] decode(INDArray q, int dV, boolean causal, double softmaxScale, INDArray sink,
                             INDArray outPositions, RopeConfig rope) {
        int b = (int) q.size(0);
        DenseDecode.Options o = new DenseDecode.Options(dV).causal(causal).softmaxScale(softmaxScale);
        if (layout.isFp8()) o.fp8(layout, blockSize);
        if (rope != null) o.rope(rope);
        return Nd4j.exec(new DenseDecode(q, data, tableRows(b), lengths(b), sink, outPositions, o));
    }

    /** The block-table rows of sequences 0..b-1 (a contiguous copy). */
    private INDArray tableRows(int b) {
        return blockTable.get(NDArrayIndex.interval(0, b), NDArrayIndex.all()).dup();
    }

    /** The cached lengths of sequences 0..b-1 (a contiguous copy). */
    private INDArray lengths(int b) {
        return seqlensArray.get(NDArrayIndex.interval(0, b)).dup();
    }

    /** Forgets sequence i and returns its blocks to the pool. */
    public void reset(int i) {
        for (int blk : blocks[i]) free.add(blk);
        blocks[i] = new int[0];
        seqlens[i] = 0;
        seqlensArray.putScalar(i, 0);
        for (int j = 0; j < maxBlocksPerSeq; j++) blockTable.putScalar(i, j, 0);
    }

    private void ensureCapacity(int seq, int tokens) {
        int needed = (tokens + blockSize - 1) / blockSize;
        if (needed > maxBlocksPerSeq) {
            throw new MlaException("PagedKvCache: sequence " + seq + " would hold " + tokens + " tokens, more than "
                    + maxBlocksPerSeq + " blocks of " + blockSize);
        }
        while (blocks[seq].length < needed) {
            Integer blk = free.poll();
            if (blk == null) throw new MlaException("PagedKvCache: out of blocks (all " + data.size(0) + " in use)");
            int[] grown = Arrays.copyOf(blocks[seq], blocks[seq].length + 1);
            grown[grown.length - 1] = blk;
            blocks[seq] = grown;
            blockTable.putScalar(seq, grown.length - 1, blk);
        }
    }
}
