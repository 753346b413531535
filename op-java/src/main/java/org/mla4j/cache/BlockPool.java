package org.mla4j.cache;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Deque;
import org.mla4j.MlaException;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The page bookkeeping of a paged cache, on the host: a pool of free blocks, each sequence's
 * blocks (its block-table row) and cached length, mirrored in int32 arrays the ops read.
 */
final class BlockPool {
    private final String owner;
    private final int blockSize;
    private final int numBlocks;
    private final int maxBlocksPerSeq;
    private final INDArray table;      // INT [maxBatch, maxBlocksPerSeq]
    private final INDArray lengths;    // INT [maxBatch]
    private final int[] seqlens;
    private final int[][] blocks;
    private final boolean[] rowChanged;
    private final Deque<Integer> free = new ArrayDeque<>();

    BlockPool(String owner, int blockSize, int numBlocks, int maxBatch, int maxBlocksPerSeq) {
        if (blockSize <= 0 || numBlocks <= 0 || maxBatch <= 0 || maxBlocksPerSeq <= 0) {
            throw new MlaException(owner + ": blockSize, numBlocks, maxBatch and maxBlocksPerSeq must be > 0, got "
                    + blockSize + ", " + numBlocks + ", " + maxBatch + ", " + maxBlocksPerSeq);
        }
        this.owner = owner;
        this.blockSize = blockSize;
        this.numBlocks = numBlocks;
        this.maxBlocksPerSeq = maxBlocksPerSeq;
        this.table = Nd4j.zeros(DataType.INT, maxBatch, maxBlocksPerSeq);
        this.lengths = Nd4j.zeros(DataType.INT, maxBatch);
        this.seqlens = new int[maxBatch];
        this.blocks = new int[maxBatch][0];
        this.rowChanged = new boolean[maxBatch];
        for (int i = 0; i < numBlocks; i++) free.add(i);
    }

    int maxBatch() { return seqlens.length; }

    int maxBlocksPerSeq() { return maxBlocksPerSeq; }

    int freeBlocks() { return free.size(); }

    int length(int i) { return seqlens[i]; }

    /** The whole block table and length arrays (views of these change as the cache does). */
    INDArray table() { return table; }

    INDArray lengths() { return lengths; }

    /** Table rows of sequences 0..b-1: a view, row stride maxBlocksPerSeq. */
    INDArray tableRows(int b) {
        return table.get(NDArrayIndex.interval(0, b), NDArrayIndex.all());
    }

    /** Lengths of sequences 0..b-1: a view. */
    INDArray lengthRows(int b) {
        return lengths.get(NDArrayIndex.interval(0, b));
    }

    /**
     * The cache slots ({@code block * blockSize + offset}) of token positions: {@code positions}
     * INT [b, ...] holds positions of sequence i in row i; a position outside
     * {@code [0, length(i))} becomes -1 (an entry sparse decode skips).
     */
    INDArray slots(String op, INDArray positions) {
        if (positions == null || positions.dataType() != DataType.INT || positions.rank() < 1
                || positions.size(0) > maxBatch()) {
            throw new MlaException(op + ": positions must be INT [b <= " + maxBatch() + ", ...], got "
                    + (positions == null ? "null" : positions.dataType() + " " + Arrays.toString(positions.shape())));
        }
        int b = (int) positions.size(0);
        int[] p = positions.dup('c').data().asInt();
        int perRow = b == 0 ? 0 : p.length / b;
        int[] slots = new int[p.length];
        for (int i = 0; i < b; i++) {
            for (int j = i * perRow; j < (i + 1) * perRow; j++) {
                int t = p[j];
                slots[j] = t >= 0 && t < seqlens[i] ? blocks[i][t / blockSize] * blockSize + t % blockSize : -1;
            }
        }
        return Nd4j.createFromArray(slots).reshape(positions.shape());
    }

    /** Checks that sequences 0..b-1 can take n more tokens each, then gives them the blocks. */
    void reserve(int b, int n) {
        for (int i = 0; i < b; i++) {
            long tokens = (long) seqlens[i] + n;
            long needed = (tokens + blockSize - 1) / blockSize;
            if (needed > maxBlocksPerSeq) {
                throw new MlaException(owner + ": sequence " + i + " would hold " + tokens + " tokens, more than "
                        + maxBlocksPerSeq + " blocks of " + blockSize);
            }
        }
        long want = 0;
        for (int i = 0; i < b; i++) want += Math.max(0, (seqlens[i] + n + blockSize - 1) / blockSize - blocks[i].length);
        if (want > free.size()) {
            throw new MlaException(owner + ": out of blocks (" + want + " more needed, " + free.size() + " of "
                    + numBlocks + " free)");
        }
        for (int i = 0; i < b; i++) {
            int needed = (seqlens[i] + n + blockSize - 1) / blockSize;
            while (blocks[i].length < needed) {
                int blk = free.poll();
                int[] grown = Arrays.copyOf(blocks[i], blocks[i].length + 1);
                grown[grown.length - 1] = blk;
                blocks[i] = grown;
                table.putScalar(i, grown.length - 1, blk);
                rowChanged[i] = true;
            }
        }
    }

    /** Sequences 0..b-1 now hold n more tokens each. */
    void advance(int b, int n) {
        for (int i = 0; i < b; i++) {
            seqlens[i] += n;
            lengths.putScalar(i, seqlens[i]);
        }
    }

    /** Forgets sequence i and returns its blocks to the pool. */
    void reset(int i) {
        for (int blk : blocks[i]) free.add(blk);
        blocks[i] = new int[0];
        seqlens[i] = 0;
        lengths.putScalar(i, 0);
        for (int j = 0; j < maxBlocksPerSeq; j++) table.putScalar(i, j, 0);
        rowChanged[i] = true;
    }

    /** Whether row i of the table changed since the last call (and clears the mark). */
    boolean takeRowChange(int i) {
        boolean c = rowChanged[i];
        rowChanged[i] = false;
        return c;
    }
}
