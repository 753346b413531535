package org.mla4j.cache;

import java.util.Arrays;
import org.mla4j.MlaException;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.Fp8Check;
import org.mla4j.ops.KvAppend;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparseDecode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

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
 * Under the GPU placement ({@link org.mla4j.gpu.Placement}) decode and sparse decode copy
 * this cache to the device on every call; a {@link DeviceKvCache} keeps it there. Not
 * thread-safe: one decoding loop owns a cache. Separate caches may be used from separate
 * threads at once, and a cache may pass from one thread to another when the hand-over orders
 * the two (an executor, a queue, a lock); two threads must never call one cache at the same
 * time.
 */
public final class PagedKvCache implements KvCache {
    private final CacheLayout layout;
    private final int dQk;
    private final int blockSize;
    private final INDArray data;
    private final BlockPool pool;
    private Fp8Check fp8Check = Fp8Check.OFF;

    private PagedKvCache(CacheLayout layout, DataType plainType, int dQk, int blockSize, int numBlocks,
                         int maxBatch, int maxBlocksPerSeq) {
        if (dQk <= 0) throw new MlaException("PagedKvCache: dQk must be > 0, got " + dQk);
        if (layout.isFp8() && layout.dQk() != dQk) {
            throw new MlaException("PagedKvCache: layout " + layout + " holds " + layout.dQk() + " dims, not " + dQk);
        }
        this.pool = new BlockPool("PagedKvCache", blockSize, numBlocks, maxBatch, maxBlocksPerSeq);
        this.layout = layout;
        this.dQk = dQk;
        this.blockSize = blockSize;
        this.data = layout.isFp8()
                ? Nd4j.zeros(DataType.UINT8, numBlocks, layout.blockBytes(blockSize))
                : Nd4j.zeros(plainType, numBlocks, blockSize, 1, dQk);
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

    /**
     * Checks rows before an FP8 cache quantises them ({@link Fp8Check}: NaN, Inf, values past a
     * limit); {@link Fp8Check#OFF} by default. No effect on a PLAIN cache. Returns this cache.
     */
    public PagedKvCache fp8Check(Fp8Check check) {
        this.fp8Check = java.util.Objects.requireNonNull(check, "check");
        return this;
    }

    @Override public CacheLayout layout() { return layout; }
    @Override public int blockSize() { return blockSize; }
    @Override public int dQk() { return dQk; }
    @Override public int maxBatch() { return pool.maxBatch(); }
    @Override public DataType rowType() { return layout.isFp8() ? DataType.FLOAT : data.dataType(); }
    @Override public DataType queryType() { return layout.isFp8() ? null : data.dataType(); }
    public int freeBlocks() { return pool.freeBlocks(); }

    @Override
    public int length(int i) { return pool.length(i); }

    /** The cache array (PLAIN: [blocks, block_size, 1, dQk]; FP8: UINT8 [blocks, block_bytes]). */
    public INDArray data() { return data; }

    public INDArray blockTable() { return pool.table(); }

    public INDArray seqlens() { return pool.lengths(); }

    @Override
    public long bytes() { return data.length() * data.dataType().width(); }

    @Override
    public void append(INDArray rows) {
        if (rows.rank() != 3 || rows.size(2) != dQk || rows.size(0) > pool.maxBatch()) {
            throw new MlaException("PagedKvCache.append: rows must be [b <= " + pool.maxBatch() + ", n, " + dQk + "], got "
                    + Arrays.toString(rows.shape()));
        }
        int b = (int) rows.size(0), n = (int) rows.size(1);
        if (layout.isFp8()) fp8Check.verify("PagedKvCache.append", "rows", rows, layout.tile);
        pool.reserve(b, n);
        Nd4j.exec(KvAppend.inPlace(data, pool.tableRows(b).dup(), pool.lengthRows(b).dup(), rows, layout, blockSize));
        pool.advance(b, n);
    }

    @Override
    public INDArray[] decode(INDArray q, int dV, boolean causal, double softmaxScale, INDArray sink,
                             INDArray outPositions, RopeConfig rope) {
        checkBatch("PagedKvCache.decode", q);
        int b = (int) q.size(0);
        DenseDecode.Options o = new DenseDecode.Options(dV).causal(causal).softmaxScale(softmaxScale);
        if (layout.isFp8()) o.fp8(layout, blockSize);
        if (rope != null) o.rope(rope);
        return Nd4j.exec(new DenseDecode(q, data, pool.tableRows(b).dup(), pool.lengthRows(b).dup(), sink, outPositions, o));
    }

    /**
     * Sparse decode with the CPU kernel (or, under the GPU placement, with this cache copied to
     * the device per call); {@code extra}'s cache must be a {@code PagedKvCache} too.
     */
    @Override
    public INDArray[] sparseDecode(INDArray q, int dV, double softmaxScale, INDArray indices, INDArray topkLength,
                                   SparseKeys extra, INDArray sink, INDArray outPositions, RopeConfig rope) {
        SparseDecode.Options o = new SparseDecode.Options(dV).softmaxScale(softmaxScale);
        if (layout.isFp8()) o.fp8(layout, blockSize);
        if (rope != null) o.rope(rope);
        PagedKvCache e = null;
        if (extra != null) {
            if (!(extra.cache() instanceof PagedKvCache)) {
                throw new MlaException("PagedKvCache.sparseDecode: the extra key set must be a PagedKvCache too, got "
                        + extra.cache().getClass().getSimpleName());
            }
            e = (PagedKvCache) extra.cache();
            if (e.layout.isFp8()) o.extraFp8(e.layout, e.blockSize);
        }
        return Nd4j.exec(new SparseDecode(q, data, indices, topkLength, e == null ? null : e.data,
                e == null ? null : extra.indices(), e == null ? null : extra.topkLength(), sink, outPositions, o));
    }

    @Override
    public INDArray slots(INDArray positions) {
        return pool.slots("PagedKvCache.slots", positions);
    }

    /** q's batch must address sequences this cache holds (the other dims the op checks). */
    private void checkBatch(String op, INDArray q) {
        if (q == null || q.rank() != 4) {
            throw new MlaException(op + ": q must have rank 4 [b, s_q, h_q, d_qk], got "
                    + (q == null ? "null" : Arrays.toString(q.shape())));
        }
        if (q.size(0) < 1 || q.size(0) > pool.maxBatch()) {
            throw new MlaException(op + ": q's batch b (dim 0 of " + Arrays.toString(q.shape())
                    + ") must be in [1, maxBatch " + pool.maxBatch() + "] of this cache, got " + q.size(0));
        }
    }

    @Override
    public void reset(int i) {
        pool.reset(i);
    }
}
