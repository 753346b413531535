package org.mla4j.cache;

import java.util.Arrays;
import org.mla4j.MlaException;
import org.mla4j.exec.NativeLib;
import org.mla4j.exec.Plan;
import org.mla4j.exec.PlanOperands;
import org.mla4j.gpu.CudaStream;
import org.mla4j.gpu.DeviceBuffer;
import org.mla4j.gpu.DeviceCall;
import org.mla4j.gpu.Gpu;
import org.mla4j.nativelib.MlaLib;
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
 * A paged KV cache that lives on a GPU: the block pool, the block table and the cached lengths
 * are device memory, rows are appended (and for the FP8 layouts quantised) by a kernel on the
 * device, and dense and sparse decode read the cache where it is. A step copies only its own
 * small tensors: the new rows, the queries and the sparse indices in, the outputs and lse out,
 * and the block-table rows that changed. The page bookkeeping stays on the host, so every slot written is checked there.
 *
 * <pre>{@code
 * try (DeviceKvCache cache = DeviceKvCache.plain(0, DataType.BFLOAT16, 576, 64, 4096, 128, 64)) {
 *     cache.append(latentRows);                           // [b, 1, 576]
 *     INDArray[] outLse = cache.decode(q, 512, true, scale); // q [b, 1, h_q, 576] bf16
 * }
 * }</pre>
 *
 * Not thread-safe: one decoding loop owns a cache; it runs on the calling thread's stream for
 * the device. Every method except the {@code decodeInto} that queues on a caller's
 * {@link DeviceCall} waits for its stream before it returns, so a cache may pass to another thread (with a hand-over that orders the two), which
 * then uses its own stream. Separate caches may be used from separate threads at once.
 * {@link #close()} frees the device memory.
 */
public final class DeviceKvCache implements KvCache {
    private final int device;
    private final CacheLayout layout;
    private final DataType plainType;
    private final int dQk;
    private final int blockSize;
    private final int numBlocks;
    private final long blockBytes;
    private final BlockPool pool;
    private Fp8Check fp8Check = Fp8Check.OFF;
    private final DeviceBuffer data;
    private final DeviceBuffer table;
    private final DeviceBuffer lengths;
    private boolean closed;

    private DeviceKvCache(int device, CacheLayout layout, DataType plainType, int dQk, int blockSize, int numBlocks,
                          int maxBatch, int maxBlocksPerSeq) {
        Gpu.requireDevice("DeviceKvCache", device);
        if (dQk <= 0) throw new MlaException("DeviceKvCache: dQk must be > 0, got " + dQk);
        if (!layout.isFp8() && (plainType == null || !plainType.isFPType() || NativeLib.dtype(plainType) < 0)) {
            throw new MlaException("DeviceKvCache: a PLAIN cache holds FLOAT, DOUBLE, HALF or BFLOAT16 rows, got " + plainType);
        }
        this.pool = new BlockPool("DeviceKvCache", blockSize, numBlocks, maxBatch, maxBlocksPerSeq);
        this.device = device;
        this.layout = layout;
        this.plainType = plainType;
        this.dQk = dQk;
        this.blockSize = blockSize;
        this.numBlocks = numBlocks;
        this.blockBytes = layout.isFp8() ? layout.blockBytes(blockSize) : (long) blockSize * dQk * plainType.width();
        DeviceBuffer d = null, t = null, l = null;
        try {
            d = DeviceBuffer.allocate(device, blockBytes * numBlocks);
            t = DeviceBuffer.allocate(device, 4L * maxBatch * maxBlocksPerSeq);
            l = DeviceBuffer.allocate(device, 4L * maxBatch);
            d.fill(0, null);
            t.fill(0, null);
            l.fill(0, null);
            NativeLib.check(MlaLib.mla_cuda_device_synchronize());
        } catch (RuntimeException e) {
            for (DeviceBuffer b : new DeviceBuffer[] {d, t, l}) if (b != null) b.close();
            throw e;
        }
        this.data = d;
        this.table = t;
        this.lengths = l;
    }

    /** A cache of plain rows of {@code type} (BFLOAT16 for the tensor-core kernels) on {@code device}. */
    public static DeviceKvCache plain(int device, DataType type, int dQk, int blockSize, int numBlocks, int maxBatch,
                                      int maxBlocksPerSeq) {
        return new DeviceKvCache(device, CacheLayout.PLAIN, type, dQk, blockSize, numBlocks, maxBatch, maxBlocksPerSeq);
    }

    /** A cache in an FP8 layout (V32 or MODEL1) on {@code device}. */
    public static DeviceKvCache fp8(int device, CacheLayout layout, int blockSize, int numBlocks, int maxBatch,
                                    int maxBlocksPerSeq) {
        if (!layout.isFp8()) throw new MlaException("DeviceKvCache.fp8: layout must be V32 or MODEL1, got " + layout);
        return new DeviceKvCache(device, layout, null, layout.dQk(), blockSize, numBlocks, maxBatch, maxBlocksPerSeq);
    }

    public int device() { return device; }
    @Override public CacheLayout layout() { return layout; }
    @Override public int dQk() { return dQk; }
    @Override public int blockSize() { return blockSize; }
    @Override public int maxBatch() { return pool.maxBatch(); }
    @Override public int length(int i) { return pool.length(i); }
    @Override public long bytes() { return blockBytes * numBlocks; }
    @Override public DataType rowType() { return layout.isFp8() ? DataType.FLOAT : plainType; }
    @Override public DataType queryType() { return layout.isFp8() ? DataType.BFLOAT16 : plainType; }

    public int freeBlocks() { return pool.freeBlocks(); }

    /**
     * Checks rows on the host before an FP8 cache quantises them on the GPU ({@link Fp8Check}:
     * NaN, Inf, values past a limit); {@link Fp8Check#OFF} by default. No effect on a PLAIN
     * cache. Returns this cache.
     */
    public DeviceKvCache fp8Check(Fp8Check check) {
        this.fp8Check = java.util.Objects.requireNonNull(check, "check");
        return this;
    }

    /** The host copy of the block table (INT [maxBatch, maxBlocksPerSeq]); the device holds the same. */
    public INDArray blockTable() { return pool.table(); }

    @Override
    public void append(INDArray rows) {
        requireOpen();
        if (rows.rank() != 3 || rows.size(2) != dQk || rows.size(0) > pool.maxBatch() || rows.size(0) < 1
                || !rows.dataType().isFPType()) {
            throw new MlaException("DeviceKvCache.append: rows must be floating point [1 <= b <= " + pool.maxBatch()
                    + ", n, " + dQk + "], got " + rows.dataType() + " " + Arrays.toString(rows.shape()));
        }
        int b = (int) rows.size(0), n = (int) rows.size(1);
        if (n == 0) return;
        if (layout.isFp8()) fp8Check.verify("DeviceKvCache.append", "rows", rows, layout.tile);
        pool.reserve(b, n);
        INDArray kv = rows.isView() || rows.ordering() != 'c' ? rows.dup('c') : rows;
        try (DeviceCall call = DeviceCall.open(device)) {
            uploadTableChanges(call.cudaStream());
            INDArray t = pool.tableRows(b), l = pool.lengthRows(b);
            call.bind(t, table.at(0)).bind(l, lengths.at(0));
            KvAppend.launch(call, kv, this::describe, 1, t, l);
            pool.advance(b, n);
            lengths.upload(NativeLib.ptr(pool.lengths()), 0, 4L * b, call.cudaStream());
            call.finish();
        }
    }

    @Override
    public INDArray[] decode(INDArray q, int dV, boolean causal, double softmaxScale, INDArray sink,
                             INDArray outPositions, RopeConfig rope) {
        checkDecode(q, dV, sink, outPositions);
        int b = (int) q.size(0);
        long sQ = q.size(1), hQ = q.size(2);
        INDArray out = Nd4j.createUninitialized(q.dataType(), b, sQ, hQ, dV);
        INDArray lse = Nd4j.createUninitialized(DataType.FLOAT, b, hQ, sQ);
        try (DeviceCall call = DeviceCall.open(device)) {
            queueDecode(call, q, dV, causal, softmaxScale, sink, outPositions, rope, out, lse);
            call.finish();
        }
        return new INDArray[] {out, lse};
    }

    /**
     * Dense decode into arrays the caller keeps between steps ({@code out [b, s_q, h_q, dV]} of
     * q's type, {@code lse FLOAT [b, h_q, s_q]}, host arrays): a decode loop that reuses them
     * saves allocating fresh output memory each step, which on a large batch costs more than
     * the copies (docs/perf.md).
     */
    public void decodeInto(INDArray q, int dV, boolean causal, double softmaxScale, INDArray sink,
                           INDArray outPositions, RopeConfig rope, INDArray out, INDArray lse) {
        try (DeviceCall call = DeviceCall.open(device)) {
            decodeInto(call, q, dV, causal, softmaxScale, sink, outPositions, rope, out, lse);
            call.finish();
        }
    }

    /**
     * Queues dense decode on a call the caller owns (for pipelines and benchmarks): arrays the
     * caller {@linkplain DeviceCall#bind bound} to device memory are used in place, others are
     * copied; {@code out [b, s_q, h_q, dV]} and {@code lse FLOAT [b, h_q, s_q]} are written
     * when the caller finishes the call. Arguments are checked as by {@link #decode}.
     */
    public void decodeInto(DeviceCall call, INDArray q, int dV, boolean causal, double softmaxScale, INDArray sink,
                           INDArray outPositions, RopeConfig rope, INDArray out, INDArray lse) {
        checkDecode(q, dV, sink, outPositions);
        checkOutputs("DeviceKvCache.decode", call, q, dV, out, lse);
        queueDecode(call, q, dV, causal, softmaxScale, sink, outPositions, rope, out, lse);
    }

    /** Queues dense decode on the call; the arguments are checked. */
    private void queueDecode(DeviceCall call, INDArray q, int dV, boolean causal, double softmaxScale, INDArray sink,
                             INDArray outPositions, RopeConfig rope, INDArray out, INDArray lse) {
        int b = (int) q.size(0);
        uploadTableChanges(call.cudaStream());
        INDArray t = pool.tableRows(b), l = pool.lengthRows(b);
        call.bind(t, table.at(0)).bind(l, lengths.at(0));
        DenseDecode.launch(call, contiguous(q), this::describe, t, l, contiguous(sink), contiguous(outPositions),
                out, lse, dV, causal, softmaxScale, rope == null ? RopeConfig.none() : rope);
    }

    private void checkDecode(INDArray q, int dV, INDArray sink, INDArray outPositions) {
        String op = "DeviceKvCache.decode";
        checkQuery(op, q, dV, true);
        checkSinkAndPositions(op, q, sink, outPositions);
    }

    /** q [b, s_q, h_q, dQk] of a type this cache's rows allow (b within maxBatch: dense decode), dV. */
    private void checkQuery(String op, INDArray q, int dV, boolean withinBatch) {
        requireOpen();
        if (q == null || q.rank() != 4 || q.size(3) != dQk || withinBatch && (q.size(0) < 1 || q.size(0) > pool.maxBatch())) {
            throw new MlaException(op + ": q must be [" + (withinBatch ? "1 <= b <= " + pool.maxBatch() : "b")
                    + ", s_q, h_q, " + dQk + "], got " + (q == null ? "null" : Arrays.toString(q.shape())));
        }
        if (!q.dataType().isFPType() || !layout.isFp8() && q.dataType() != plainType) {
            throw new MlaException(op + ": q must be " + (layout.isFp8() ? "floating point" : plainType.toString())
                    + ", got " + q.dataType());
        }
        int valueDims = valueDims();
        if (dV < 1 || dV > valueDims) throw new MlaException(op + ": dV must be in [1, " + valueDims + "], got " + dV);
    }

    /** Value dims a row provides: the latent part of V32, the whole row otherwise. */
    private int valueDims() {
        return layout.isFp8() ? layout.valueDims() : dQk;
    }

    private static void checkSinkAndPositions(String op, INDArray q, INDArray sink, INDArray outPositions) {
        long b = q.size(0), sQ = q.size(1), hQ = q.size(2);
        if (sink != null && (sink.dataType() != DataType.FLOAT || !Arrays.equals(sink.shape(), new long[] {hQ}))) {
            throw new MlaException(op + ": sink must be FLOAT [" + hQ + "], got " + sink.dataType() + " "
                    + Arrays.toString(sink.shape()));
        }
        if (outPositions != null && (outPositions.dataType() != DataType.INT
                || !Arrays.equals(outPositions.shape(), new long[] {b, sQ}))) {
            throw new MlaException(op + ": outPositions must be INT [" + b + ", " + sQ + "], got "
                    + outPositions.dataType() + " " + Arrays.toString(outPositions.shape()));
        }
    }

    /** out [b, s_q, h_q, dV] of q's type and lse FLOAT [b, h_q, s_q], row-major host arrays; the call on this device. */
    private void checkOutputs(String op, DeviceCall call, INDArray q, int dV, INDArray out, INDArray lse) {
        long b = q.size(0), sQ = q.size(1), hQ = q.size(2);
        if (out == null || lse == null || !Arrays.equals(out.shape(), new long[] {b, sQ, hQ, dV})
                || out.dataType() != q.dataType() || !Arrays.equals(lse.shape(), new long[] {b, hQ, sQ})
                || lse.dataType() != DataType.FLOAT || !rowMajor(out) || !rowMajor(lse)) {
            throw new MlaException(op + ": out must be " + q.dataType() + " [" + b + ", " + sQ + ", " + hQ + ", " + dV
                    + "] and lse FLOAT [" + b + ", " + hQ + ", " + sQ + "], both row-major and not views, got "
                    + shapeOf(out) + " and " + shapeOf(lse));
        }
        if (call.device() != device) {
            throw new MlaException(op + ": the call runs on device " + call.device() + " but the cache lives on device "
                    + device);
        }
    }

    private static String shapeOf(INDArray a) {
        return a == null ? "null" : a.dataType() + " " + Arrays.toString(a.shape()) + (a.isView() ? " (a view)" : "")
                + (a.ordering() != 'c' ? " (order " + a.ordering() + ")" : "");
    }

    // ---- sparse decode ----

    /**
     * Sparse decode over the device-resident rows (ops.md section 2): {@code indices INT
     * [b, s_q, topk]} are slots {@code block * blockSize + offset} of this cache's pool
     * ({@link #slots} turns positions into slots); b is not bound to maxBatch, since the
     * indices name rows of any sequence. {@code extra}, when given, is a second
     * {@code DeviceKvCache} on the same device (e.g. V4's compressed entries) with its own
     * indices and lengths, attended in the same softmax. Copies q, the indices, lengths, sink
     * and positions in, out and lse back.
     */
    @Override
    public INDArray[] sparseDecode(INDArray q, int dV, double softmaxScale, INDArray indices, INDArray topkLength,
                                   SparseKeys extra, INDArray sink, INDArray outPositions, RopeConfig rope) {
        DeviceKvCache e = checkSparse(q, dV, indices, topkLength, extra, sink, outPositions);
        long b = q.size(0), sQ = q.size(1), hQ = q.size(2);
        INDArray out = Nd4j.createUninitialized(q.dataType(), b, sQ, hQ, dV);
        INDArray lse = Nd4j.createUninitialized(DataType.FLOAT, b, hQ, sQ);
        try (DeviceCall call = DeviceCall.open(device)) {
            queueSparse(call, q, dV, softmaxScale, indices, topkLength, extra, e, sink, outPositions, rope, out, lse);
            call.finish();
        }
        return new INDArray[] {out, lse};
    }

    /**
     * Sparse decode into arrays the caller keeps between steps ({@code out [b, s_q, h_q, dV]}
     * of q's type, {@code lse FLOAT [b, h_q, s_q]}, row-major host arrays), as
     * {@link #decodeInto} does for dense decode.
     */
    public void sparseDecodeInto(INDArray q, int dV, double softmaxScale, INDArray indices, INDArray topkLength,
                                 SparseKeys extra, INDArray sink, INDArray outPositions, RopeConfig rope, INDArray out,
                                 INDArray lse) {
        try (DeviceCall call = DeviceCall.open(device)) {
            sparseDecodeInto(call, q, dV, softmaxScale, indices, topkLength, extra, sink, outPositions, rope, out, lse);
            call.finish();
        }
    }

    /**
     * Queues sparse decode on a call the caller owns: arrays {@linkplain DeviceCall#bind bound}
     * to device memory (q, indices, out, ...) are used in place, others copied; out and lse
     * are written when the caller finishes the call. Arguments are checked as by
     * {@link #sparseDecode}.
     */
    public void sparseDecodeInto(DeviceCall call, INDArray q, int dV, double softmaxScale, INDArray indices,
                                 INDArray topkLength, SparseKeys extra, INDArray sink, INDArray outPositions,
                                 RopeConfig rope, INDArray out, INDArray lse) {
        DeviceKvCache e = checkSparse(q, dV, indices, topkLength, extra, sink, outPositions);
        checkOutputs("DeviceKvCache.sparseDecode", call, q, dV, out, lse);
        queueSparse(call, q, dV, softmaxScale, indices, topkLength, extra, e, sink, outPositions, rope, out, lse);
    }

    /**
     * The plan of the sparse decode these arguments make (the native plan query; nothing runs):
     * which implementation runs it, e.g. {@code sm90_sparse} or {@code cuda_core}, and why the
     * others refused.
     */
    public Plan sparseDecodePlan(INDArray q, int dV, double softmaxScale, INDArray indices, INDArray topkLength,
                                 SparseKeys extra, INDArray sink, INDArray outPositions, RopeConfig rope) {
        DeviceKvCache e = checkSparse(q, dV, indices, topkLength, extra, sink, outPositions);
        long b = q.size(0), sQ = q.size(1), hQ = q.size(2);
        // Outputs stand in for their shapes: the plan query reads no memory.
        INDArray out = Nd4j.createUninitialized(q.dataType(), b, sQ, hQ, dV);
        INDArray lse = Nd4j.createUninitialized(DataType.FLOAT, b, hQ, sQ);
        PlanOperands ops = new PlanOperands(device);
        return SparseDecode.plan(ops, contiguous(q), keySet(indices, topkLength),
                e == null ? null : e.keySet(extra.indices(), extra.topkLength()), contiguous(sink),
                contiguous(outPositions), out, lse, dV, softmaxScale, rope == null ? RopeConfig.none() : rope);
    }

    @Override
    public INDArray slots(INDArray positions) {
        requireOpen();
        return pool.slots("DeviceKvCache.slots", positions);
    }

    private void queueSparse(DeviceCall call, INDArray q, int dV, double softmaxScale, INDArray indices,
                             INDArray topkLength, SparseKeys extra, DeviceKvCache e, INDArray sink,
                             INDArray outPositions, RopeConfig rope, INDArray out, INDArray lse) {
        SparseDecode.launch(call, contiguous(q), keySet(indices, topkLength),
                e == null ? null : e.keySet(extra.indices(), extra.topkLength()), contiguous(sink),
                contiguous(outPositions), out, lse, dV, softmaxScale, rope == null ? RopeConfig.none() : rope);
    }

    /** This cache as a key set of sparse decode (its pool in place, the indices copied by the call). */
    private SparseDecode.KeySet keySet(INDArray indices, INDArray topkLength) {
        return new SparseDecode.KeySet(this::describe, contiguous(indices), contiguous(topkLength));
    }

    /** Checks a sparse decode's arguments; returns the extra cache (null without one). */
    private DeviceKvCache checkSparse(INDArray q, int dV, INDArray indices, INDArray topkLength, SparseKeys extra,
                                      INDArray sink, INDArray outPositions) {
        String op = "DeviceKvCache.sparseDecode";
        checkQuery(op, q, dV, false);
        checkSinkAndPositions(op, q, sink, outPositions);
        checkIndices(op, "indices", "topkLength", q, indices, topkLength);
        if (extra == null) return null;
        if (!(extra.cache() instanceof DeviceKvCache)) {
            throw new MlaException(op + ": the extra key set must be a DeviceKvCache too, got "
                    + extra.cache().getClass().getSimpleName());
        }
        DeviceKvCache e = (DeviceKvCache) extra.cache();
        e.requireOpen();
        if (e.device != device) {
            throw new MlaException(op + ": the extra cache lives on device " + e.device + ", this cache on device "
                    + device);
        }
        if (e.dQk != dQk || e.valueDims() != valueDims()) {
            throw new MlaException(op + ": the extra cache (" + e.layout + ", dQk " + e.dQk + ", " + e.valueDims()
                    + " value dims) must match this cache (" + layout + ", dQk " + dQk + ", " + valueDims()
                    + " value dims)");
        }
        if (!e.layout.isFp8() && q.dataType() != e.plainType) {
            throw new MlaException(op + ": q must be " + e.plainType + " (the extra cache's rows), got " + q.dataType());
        }
        checkIndices(op, "extra indices", "extra topkLength", q, extra.indices(), extra.topkLength());
        return e;
    }

    private static void checkIndices(String op, String idxName, String lenName, INDArray q, INDArray indices,
                                     INDArray topkLength) {
        long b = q.size(0), sQ = q.size(1);
        if (indices == null || indices.dataType() != DataType.INT || indices.rank() != 3 || indices.size(0) != b
                || indices.size(1) != sQ) {
            throw new MlaException(op + ": " + idxName + " must be INT [" + b + ", " + sQ + ", topk], got "
                    + shapeOf(indices));
        }
        if (topkLength != null && (topkLength.dataType() != DataType.INT
                || !Arrays.equals(topkLength.shape(), new long[] {b}))) {
            throw new MlaException(op + ": " + lenName + " must be INT [" + b + "], got " + shapeOf(topkLength));
        }
    }

    @Override
    public void reset(int i) {
        requireOpen();
        pool.reset(i);
        try (DeviceCall call = DeviceCall.open(device)) {
            lengths.upload(NativeLib.ptr(pool.lengths()), 0, 4L * pool.maxBatch(), call.cudaStream());
            uploadTableChanges(call.cudaStream());
            call.finish();
        }
    }

    /**
     * A host copy of the cache pool (PLAIN: [num_blocks, block_size, 1, dQk] of the row type;
     * FP8: UINT8 [num_blocks, block_bytes]), for checks and inspection.
     */
    public INDArray download() {
        requireOpen();
        INDArray host = layout.isFp8() ? Nd4j.createUninitialized(DataType.UINT8, numBlocks, blockBytes)
                : Nd4j.createUninitialized(plainType, numBlocks, blockSize, 1, dQk);
        try (CudaStream s = new CudaStream(device)) {
            data.download(NativeLib.ptr(host), 0, bytes(), s);
            s.synchronize();
        }
        return host;
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        data.close();
        table.close();
        lengths.close();
    }

    /** The cache descriptor of the native calls. */
    private void describe(MlaLib.mla_cache c) {
        c.kind(layout.kind).data(data.at(0)).num_blocks(numBlocks).block_size(blockSize).h_kv(1);
        if (layout.isFp8()) {
            c.dtype(MlaLib.MLA_UINT8).d_nope(layout.dNope).d_rope(layout.dRope).tile(layout.tile);
        } else {
            c.dtype(NativeLib.dtype(plainType)).block_stride((long) blockSize * dQk).token_stride(dQk).head_stride(dQk);
        }
    }

    /** Copies the block table to the device, in stream order, when a row of it changed. */
    private void uploadTableChanges(CudaStream s) {
        boolean changed = false;
        for (int i = 0; i < pool.maxBatch(); i++) changed |= pool.takeRowChange(i);
        if (changed) table.upload(NativeLib.ptr(pool.table()), 0, table.bytes(), s);
    }

    private static INDArray contiguous(INDArray a) {
        return a == null || rowMajor(a) ? a : a.dup('c');
    }

    /** Row-major elements from the start of the array's own buffer. */
    private static boolean rowMajor(INDArray a) {
        return !a.isView() && a.ordering() == 'c';
    }

    private void requireOpen() {
        if (closed) throw new IllegalStateException("DeviceKvCache: used after close()");
    }
}
