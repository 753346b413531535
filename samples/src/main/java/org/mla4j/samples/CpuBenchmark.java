package org.mla4j.samples;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.ops.AttentionBp;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.IndexerScores;
import org.mla4j.ops.IndexerTopK;
import org.mla4j.ops.KvAppend;
import org.mla4j.ops.KvQuantize;
import org.mla4j.ops.Rope;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparseDecode;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.ops.SparsePrefillBp;
import org.mla4j.ops.TopK;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.CustomOp;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * CPU benchmark of the mla4j ops, with ND4J's own gemm rate as the ceiling and DL4J's built-in
 * attention ops ({@code sd.nn().dotProductAttention}, {@code sd.nn().multiHeadDotProductAttention})
 * timed side by side on the equivalent shapes.
 *
 * <p>Every case prints one progress line as it finishes; a markdown table of all cases (the
 * form docs/perf.md keeps) and the side-by-side groups follow at the end.
 *
 * <p>Options (all optional; {@link Options}):
 * <ul>
 * <li>{@code --quick}: smaller shapes, float32 only, short timing (a CI smoke run, well under
 * 40 s on 2 cores);</li>
 * <li>{@code --filter WORDS}: only cases whose op, implementation or dtype contains one of the
 * comma-separated words (e.g. {@code --filter decode,rope}); the ceilings always run;</li>
 * <li>{@code --help}.</li>
 * </ul>
 * The exit status is 1 when any case failed (its row then says why), so {@code --quick} can
 * serve as a smoke test.
 * mla4j ops run eagerly ({@code Nd4j.exec} on one op instance, outputs reused) unless the row
 * says SameDiff; DL4J's built-ins run through {@code SameDiff.output()} (or
 * {@code calculateGradients()}), and so do the mla4j rows they are compared with.
 */
public final class CpuBenchmark {
    private static final Map<String, INDArray> NO_PLACEHOLDERS = Collections.emptyMap();
    private static final int GEMM_N = 1024;
    private static final long COPY_ELEMENTS = 32L << 20;
    private static final String MEMORY_GROUP = "KV quantise and top-k (rate against the copy ceiling)";

    private final boolean quick;
    private final BenchData data = new BenchData(42);
    private final List<BenchCase> cases = new ArrayList<>();

    private CpuBenchmark(boolean quick) {
        this.quick = quick;
    }

    /** The command-line options (picocli). */
    @Command(name = "CpuBenchmark", sortOptions = false,
            description = "Every op's time and GFLOP/s beside DL4J's built-in attention and ND4J's gemm rate.")
    static final class Options {
        @Option(names = "--quick", description = "smaller shapes, float32 only, short timing (CI smoke run)")
        boolean quick;
        @Option(names = "--filter", paramLabel = "WORDS", split = ",",
                description = "only cases whose op, implementation or dtype contains one of these comma-separated words")
        List<String> filter;
        @Option(names = {"-h", "--help"}, usageHelp = true, description = "show this help")
        boolean help;
    }

    public static void main(String[] args) {
        Options o = new Options();
        if (!SampleCli.parse(o, args)) return;
        String filter = o.filter == null ? null : String.join(",", o.filter);
        Mla4j.install();
        long failed = new CpuBenchmark(o.quick).run(filter, System.out);
        if (failed > 0) System.exit(1);
    }

    /** Runs the ceilings and every selected case; returns the number of cases that failed. */
    private long run(String filter, PrintStream out) {
        BenchTimer timer = quick ? BenchTimer.quick() : BenchTimer.standard();
        printHeader(out, timer, filter);

        BenchReport report = new BenchReport(out);
        out.println("== ceilings ==");
        BenchReport.Row gemm = measure(report, timer, gemmCase("gemm (ceiling)"), 1, 2);
        BenchReport.Row copy = measure(report, timer, copyCase(), 2, 2);
        report.setCeilings(gemm.ok() ? gemm.gflops() : Double.NaN, copy.ok() ? copy.gbytes() : Double.NaN);
        out.printf("ceiling: gemm %.1f GFLOP/s (float32, %d^3), copy %.1f GB/s (read + write)%n%n",
                report.gemmGflops(), GEMM_N, report.copyGbytes());

        denseAttentionMha();
        denseAttentionAbsorbed();
        denseDecode();
        sparseDecode();
        sparsePrefill();
        kvCacheOps();
        indexer();
        rope();
        sameDiffOverhead();

        List<BenchCase> selected = new ArrayList<>();
        for (BenchCase c : cases) {
            if (c.matches(filter) && !(quick && c.isFullOnly())) selected.add(c);
        }
        out.println("== " + selected.size() + " cases ==");
        long start = System.nanoTime();
        int i = 0;
        for (BenchCase c : selected) {
            measure(report, timer, c, ++i, selected.size());
        }
        double seconds = (System.nanoTime() - start) / 1e9;

        BenchReport.Row gemmEnd = measure(report, timer, gemmCase("gemm (load check, end of run)"), 1, 1);
        out.println();
        out.printf("cases took %.1f s; gemm at the start %.1f GFLOP/s, at the end %.1f GFLOP/s%s; load average now %s%n",
                seconds, report.gemmGflops(), gemmEnd.ok() ? gemmEnd.gflops() : Double.NaN,
                loadDrift(report.gemmGflops(), gemmEnd), loadAverage());
        out.println();
        out.println("== all results (markdown) ==");
        report.printTable();
        out.println();
        out.println("== side by side (same run) ==");
        report.printGroups();

        long failed = report.rows().stream().filter(r -> !r.ok()).count();
        out.println();
        out.println(failed == 0 ? "all cases ran." : failed + " case(s) failed (see FAILED above).");
        return failed;
    }

    private static String loadDrift(double start, BenchReport.Row end) {
        if (!end.ok() || !(start > 0)) return "";
        double change = end.gflops() / start - 1;
        return Math.abs(change) > 0.15
                ? String.format(" (%+.0f%%: the machine's load changed during the run; compare rows with care)", 100 * change)
                : "";
    }

    /**
     * Builds and times one case. System.out is silenced meanwhile (SameDiff prints a line per
     * op it differentiates); the report writes to the stream it was given.
     */
    private BenchReport.Row measure(BenchReport report, BenchTimer timer, BenchCase c, int index, int total) {
        BenchReport.Row row;
        PrintStream stdout = System.out;
        System.setOut(new PrintStream(OutputStream.nullOutputStream()));
        try {
            Runnable body = c.build();
            row = new BenchReport.Row(c, timer.time(body), null);
        } catch (RuntimeException | LinkageError | OutOfMemoryError e) {
            String msg = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
            row = new BenchReport.Row(c, null, msg.split("\n")[0]);
        } finally {
            System.setOut(stdout);
        }
        System.gc();
        return report.add(row, index, total);
    }

    // ---------------------------------------------------------------- header

    private void printHeader(PrintStream out, BenchTimer timer, String filter) {
        out.println("mla4j CPU benchmark" + (quick ? " (--quick)" : "") + ", " + LocalDate.now());
        out.println("  CPU            : " + cpuModel() + ", " + Runtime.getRuntime().availableProcessors()
                + " cores visible to the JVM; load average " + loadAverage());
        out.println("  JVM            : " + System.getProperty("java.vm.name") + " " + System.getProperty("java.version"));
        out.println("  ND4J           : backend " + Nd4j.getBackend().getClass().getSimpleName() + ", BLAS "
                + blasVendor() + ", " + Nd4j.getEnvironment().maxThreads() + " threads");
        out.println("  mla4j native   : " + Mla4j.nativeInfo() + ", threads "
                + (System.getenv("MLA4J_NUM_THREADS") != null ? System.getenv("MLA4J_NUM_THREADS") + " (MLA4J_NUM_THREADS)"
                : "= hardware threads (MLA4J_NUM_THREADS unset)"));
        out.println("  timing         : " + timer.describe());
        out.println("  FLOP convention: attention forward 2*(d_qk + d_v) per (query head, attended key), causal counts only");
        out.println("                   attended pairs; backward = " + BenchWork.BACKWARD_FACTOR
                + " x forward; decode 2*h_q*s_q*N*(d_qk + d_v) over attended tokens N;");
        out.println("                   indexer 2*h*(d+1) per visible (query, key); softmax, masking, dequantisation not counted");
        out.println("  byte convention: decode = q + unique KV rows read (stored format) + out; quantise/append/RoPE/top-k =");
        out.println("                   bytes read + bytes written");
        out.println("  ceilings       : ND4J float32 gemm " + GEMM_N + "^3 (Nd4j.gemm) for FLOP/s, ND4J assign of "
                + (COPY_ELEMENTS * 4 >> 20) + " MiB float32 for bytes/s");
        if (filter != null) out.println("  filter         : " + filter);
        out.println();
    }

    private static String cpuModel() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("model name")) return line.substring(line.indexOf(':') + 1).trim();
            }
        } catch (IOException | RuntimeException e) {
            return System.getProperty("os.arch");
        }
        return System.getProperty("os.arch");
    }

    private static String loadAverage() {
        try {
            String[] f = Files.readString(Path.of("/proc/loadavg")).trim().split("\\s+");
            return f[0] + " " + f[1] + " " + f[2];
        } catch (IOException | RuntimeException e) {
            return "n/a";
        }
    }

    private static String blasVendor() {
        try {
            return String.valueOf(Nd4j.factory().blas().getBlasVendor());
        } catch (RuntimeException e) {
            return "unknown";
        }
    }

    // ---------------------------------------------------------------- ceilings

    private BenchCase gemmCase(String name) {
        long n = GEMM_N;
        return BenchCase.of(name, "ND4J Nd4j.gemm", "f32", n + " x " + n + " x " + n)
                .flops(2.0 * n * n * n).note("the FLOP/s ceiling of every row")
                .setup(() -> {
                    INDArray a = data.randn(DataType.FLOAT, n, n), b = data.randn(DataType.FLOAT, n, n);
                    INDArray c = Nd4j.create(DataType.FLOAT, new long[] {n, n}, 'f');
                    return () -> Nd4j.gemm(a, b, c, false, false, 1.0, 0.0);
                });
    }

    private BenchCase copyCase() {
        return BenchCase.of("copy (ceiling)", "ND4J INDArray.assign", "f32", (COPY_ELEMENTS * 4 >> 20) + " MiB")
                .bytes(2.0 * COPY_ELEMENTS * 4).memoryBound().note("the bytes/s ceiling (read + write)")
                .setup(() -> {
                    INDArray src = Nd4j.valueArrayOf(new long[] {COPY_ELEMENTS}, 1f, DataType.FLOAT);
                    INDArray dst = Nd4j.create(DataType.FLOAT, COPY_ELEMENTS);
                    return () -> dst.assign(src);
                });
    }

    // ---------------------------------------------------------------- dense attention

    /** MLA MHA mode (d_qk 192, d_v 128) and DL4J's built-ins at d 128. */
    private void denseAttentionMha() {
        int b = 1, h = 8, s = quick ? 128 : 512, dQk = 192, dV = 128, d = 128;
        String shape = "b " + b + ", s " + s + ", h " + h + ", d " + dQk + "/" + dV + ", causal";
        String shape128 = "b " + b + ", s " + s + ", h " + h + ", d " + d + "/" + d + ", non-causal";
        double fwd = BenchWork.attentionFlops(b, h, s, s, dQk, dV, true);
        double fwd128 = BenchWork.attentionFlops(b, h, s, s, d, d, false);
        String group = "dense attention forward, b " + b + ", s " + s + ", h " + h;
        String gradGroup = "dense attention forward + backward (SameDiff gradients), b " + b + ", s " + s + ", h " + h + ", d 128";

        cases.add(BenchCase.of("attention fwd (MHA)", "mla4j, SameDiff output()", "f32", shape)
                .flops(fwd).group(group)
                .setup(() -> sameDiffOutput(mlaAttentionGraph(DataType.FLOAT, b, s, h, dQk, dV, true, false), "out")));
        for (DataType t : types()) {
            cases.add(BenchCase.of("attention fwd (MHA)", "mla4j, eager Nd4j.exec", tag(t), shape)
                    .flops(fwd).group(group).fullOnly(t != DataType.FLOAT)
                    .note(t == DataType.FLOAT ? "the same op without SameDiff's per-call graph work" : "")
                    .setup(() -> eager(new Attention(data.randn(t, b, s, h, dQk), data.randn(t, b, s, h, dQk),
                            data.randn(t, b, s, h, dV), null, null, null, null, new Attention.Options().causal(true)))));
        }
        cases.add(BenchCase.of("attention fwd (MHA)", "mla4j, SameDiff output()", "f32", shape128)
                .flops(fwd128).group(group).note("the work DL4J's dotProductAttention does (d 128, all s*s pairs)")
                .setup(() -> sameDiffOutput(mlaAttentionGraph(DataType.FLOAT, b, s, h, d, d, false, false), "out")));
        for (DataType t : types()) {
            cases.add(BenchCase.of("attention fwd (MHA)", "DL4J dotProductAttention", tag(t), shape128)
                    .flops(fwd128).group(group).fullOnly(t != DataType.FLOAT)
                    .note("layout [b, h, d, s]; d 192/128 not expressible (one d for q, k, v heads); no causal mask in M2.1")
                    .setup(() -> sameDiffOutput(dl4jAttentionGraph(t, b, s, h, d, false), "out")));
        }
        double projections = 4 * 2.0 * b * s * (double) (h * d) * (h * d);
        cases.add(BenchCase.of("attention fwd (MHA)", "DL4J multiHeadDotProductAttention", "f32",
                        "b " + b + ", s " + s + ", h " + h + ", d " + d + ", features " + h * d + ", non-causal")
                .flops(fwd128 + projections).group(group)
                .note(String.format("includes the q/k/v/out projections (%.1f of %.1f GFLOP); layout [b, features, s]; "
                        + "d 128 for q, k, v", projections / 1e9, (fwd128 + projections) / 1e9))
                .setup(() -> sameDiffOutput(dl4jMhaGraph(b, s, h, d), "out")));

        for (DataType t : types()) {
            cases.add(BenchCase.of("attention bwd (MHA)", "mla4j, eager Nd4j.exec", tag(t), shape)
                    .flops(BenchWork.BACKWARD_FACTOR * fwd).fullOnly(t != DataType.FLOAT)
                    .note("backward alone (dq, dk, dv from out, lse, dOut)")
                    .setup(() -> attentionBackward(t, b, s, h, false, dQk, dV)));
        }
        cases.add(BenchCase.of("attention fwd+bwd (MHA)", "mla4j, SameDiff gradients", "f32", shape128)
                .flops((1 + BenchWork.BACKWARD_FACTOR) * fwd128).group(gradGroup).fullOnly()
                .note("calculateGradients of sum(out) w.r.t. q, k, v")
                .setup(() -> sameDiffGradients(mlaAttentionGraph(DataType.FLOAT, b, s, h, d, d, false, true))));
        cases.add(BenchCase.of("attention fwd+bwd (MHA)", "DL4J dotProductAttention", "f32", shape128)
                .flops((1 + BenchWork.BACKWARD_FACTOR) * fwd128).group(gradGroup).fullOnly()
                .note("calculateGradients of sum(out) w.r.t. q, k, v")
                .setup(() -> sameDiffGradients(dl4jAttentionGraph(DataType.FLOAT, b, s, h, d, true))));
    }

    /** Absorbed MLA (d_qk 576, value = first 512 dims of the key, one KV head). */
    private void denseAttentionAbsorbed() {
        int b = 1, hQ = 16, s = quick ? 64 : 256, dQk = 576, dV = 512;
        String shape = "b " + b + ", s " + s + ", h_q " + hQ + ", h_kv 1, d " + dQk + "/" + dV + ", causal";
        double fwd = BenchWork.attentionFlops(b, hQ, s, s, dQk, dV, true);
        for (DataType t : types()) {
            cases.add(BenchCase.of("attention fwd (absorbed)", "mla4j, eager Nd4j.exec", tag(t), shape)
                    .flops(fwd).fullOnly(t != DataType.FLOAT).note("value = first 512 dims of the key")
                    .setup(() -> eager(new Attention(data.randn(t, b, s, hQ, dQk), data.randn(t, b, s, 1, dQk), null,
                            null, null, null, null, new Attention.Options().causal(true).valueFromKey(dV)))));
        }
        for (DataType t : types()) {
            cases.add(BenchCase.of("attention bwd (absorbed)", "mla4j, eager Nd4j.exec", tag(t), shape)
                    .flops(BenchWork.BACKWARD_FACTOR * fwd).fullOnly(t != DataType.FLOAT)
                    .note("no peer ships this backward; key and value paths add into dk")
                    .setup(() -> attentionBackward(t, b, s, hQ, true, dQk, dV)));
        }
    }

    private SameDiff mlaAttentionGraph(DataType t, int b, int s, int h, int dQk, int dV, boolean causal, boolean withLoss) {
        SameDiff sd = SameDiff.create();
        SDVariable q = sd.var("q", data.randn(t, b, s, h, dQk));
        SDVariable k = sd.var("k", data.randn(t, b, s, h, dQk));
        SDVariable v = sd.var("v", data.randn(t, b, s, h, dV));
        SDVariable out = Mla4j.ops(sd).attention(q, k, v, null, null, new Attention.Options().causal(causal))[0].rename("out");
        if (withLoss) sd.setLossVariables(out.sum("loss"));
        return sd;
    }

    /** DL4J's dotProductAttention on [b, h, d, s] (rank 4: per head). */
    private SameDiff dl4jAttentionGraph(DataType t, int b, int s, int h, int d, boolean withLoss) {
        SameDiff sd = SameDiff.create();
        SDVariable q = sd.var("q", data.randn(t, b, h, d, s));
        SDVariable k = sd.var("k", data.randn(t, b, h, d, s));
        SDVariable v = sd.var("v", data.randn(t, b, h, d, s));
        SDVariable out = sd.nn().dotProductAttention("out", q, k, v, null, true);
        if (withLoss) sd.setLossVariables(out.sum("loss"));
        return sd;
    }

    /** DL4J's multiHeadDotProductAttention: x [b, h*d, s] projected to h heads of d, then back to h*d. */
    private SameDiff dl4jMhaGraph(int b, int s, int h, int d) {
        int features = h * d;
        double w = 1 / Math.sqrt(features);
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.var("x", data.randn(DataType.FLOAT, b, features, s));
        SDVariable wq = sd.var("wq", data.randn(DataType.FLOAT, h, d, features).muli(w));
        SDVariable wk = sd.var("wk", data.randn(DataType.FLOAT, h, d, features).muli(w));
        SDVariable wv = sd.var("wv", data.randn(DataType.FLOAT, h, d, features).muli(w));
        SDVariable wo = sd.var("wo", data.randn(DataType.FLOAT, h * d, features).muli(w));
        sd.nn().multiHeadDotProductAttention("out", x, x, x, wq, wk, wv, wo, null, true);
        return sd;
    }

    /**
     * Eager causal attention backward. MHA: h_kv = h_q, separate v. Absorbed: one KV head, no v,
     * the value is the first d_v dims of the key.
     */
    private Runnable attentionBackward(DataType t, int b, int s, int hQ, boolean absorbed, int dQk, int dV) {
        INDArray q = data.randn(t, b, s, hQ, dQk);
        INDArray k = data.randn(t, b, s, absorbed ? 1 : hQ, dQk);
        INDArray v = absorbed ? null : data.randn(t, b, s, hQ, dV);
        Attention.Options o = new Attention.Options().causal(true);
        if (absorbed) o.valueFromKey(dV);
        Attention fwd = new Attention(q, k, v, null, null, null, null, o);
        INDArray[] res = Nd4j.exec(fwd);
        INDArray dOut = data.randn(t, res[0].shape());
        INDArray[] in = absorbed ? new INDArray[] {q, k, res[0], res[1], dOut}
                : new INDArray[] {q, k, v, res[0], res[1], dOut};
        return eager(new AttentionBp(in, fwd));
    }

    // ---------------------------------------------------------------- decode

    private void denseDecode() {
        int b = 4, sQ = 1, hQ = 16, dQk = 576, dV = 512, sK = quick ? 512 : 2048, bs = 64;
        String shape = "b " + b + ", s_q " + sQ + ", h_q " + hQ + ", d " + dQk + "/" + dV + ", s_k " + sK + ", block " + bs;
        double flops = BenchWork.decodeFlops(hQ, (long) b * sQ * sK, dQk, dV);
        String group = "dense decode, b " + b + ", h_q " + hQ + ", d 576/512, s_k " + sK;

        cases.add(decodeCase("dense decode, BF16 cache", DataType.BFLOAT16, shape, flops, group,
                () -> data.plainCache(DataType.BFLOAT16, b, sK, sK, bs, dQk), null, b, sQ, hQ, dQk, dV));
        cases.add(decodeCase("dense decode, F32 cache", DataType.FLOAT, shape, flops, group,
                () -> data.plainCache(DataType.FLOAT, b, sK, sK, bs, dQk), null, b, sQ, hQ, dQk, dV).fullOnly());
        for (DataType t : types()) {
            cases.add(decodeCase("dense decode, FP8 V32 cache", t, shape, flops, group,
                    () -> data.fp8Cache(CacheLayout.V32, b, sK, sK, bs), CacheLayout.V32, b, sQ, hQ, dQk, dV)
                    .fullOnly(t != DataType.FLOAT).note("q in " + tag(t) + "; 656 bytes a token"));
        }
        // DL4J: the h_q query heads of one request share one KV head, so absorbed MQA decode is
        // rank-3 dotProductAttention with the heads as h_q query rows: q [b, d, h_q], k [b, d, s_k].
        double dl4jBytes = 4.0 * b * (hQ * dQk + (double) sK * (dQk + dV) + hQ * dV);
        cases.add(BenchCase.of("dense decode (equivalent)", "DL4J dotProductAttention", "f32",
                        "b " + b + ", " + hQ + " query rows, d " + dQk + "/" + dV + ", s_k " + sK)
                .flops(flops).bytes(dl4jBytes).group(group)
                .note("rank 3: q [b, 576, h_q], contiguous k [b, 576, s_k] and v [b, 512, s_k] (no paging)")
                .setup(() -> {
                    SameDiff sd = SameDiff.create();
                    SDVariable q = sd.var("q", data.randn(DataType.FLOAT, b, dQk, hQ * sQ));
                    INDArray kArr = data.randn(DataType.FLOAT, b, dQk, sK);
                    SDVariable k = sd.var("k", kArr);
                    SDVariable v = sd.var("v", kArr.get(NDArrayIndex.all(), NDArrayIndex.interval(0, dV),
                            NDArrayIndex.all()).dup('c'));
                    sd.nn().dotProductAttention("out", q, k, v, null, true);
                    return sameDiffOutput(sd, "out");
                }));
    }

    private BenchCase decodeCase(String op, DataType qType, String shape, double flops, String group,
                                 Supplier<BenchData.Paged> cacheMaker, CacheLayout fp8,
                                 int b, int sQ, int hQ, int dQk, int dV) {
        double elem = qType.width();
        // bytes: q + every cached row once (each request reads its own s_k rows) + out
        BenchCase c = BenchCase.of(op, "mla4j, eager Nd4j.exec", tag(qType), shape).flops(flops).group(group);
        return c.setup(() -> {
            BenchData.Paged p = cacheMaker.get();
            c.bytes(elem * b * sQ * hQ * (dQk + dV) + p.rowBytes * (double) b * p.tokensPerRequest);
            DenseDecode.Options o = new DenseDecode.Options(dV).causal(true);
            if (fp8 != null) o.fp8(fp8, p.blockSize);
            return eager(new DenseDecode(data.randn(qType, b, sQ, hQ, dQk), p.cache, p.blockTable, p.seqlens, null, null, o));
        });
    }

    private void sparseDecode() {
        int b = 4, sQ = 1, hQ = 16, bs = 64, tokens = quick ? 1024 : 2048;
        {
            int topk = 512, dQk = 576, dV = 512;
            String shape = "b " + b + ", s_q " + sQ + ", h_q " + hQ + ", d " + dQk + "/" + dV + ", topk " + topk
                    + " of " + tokens;
            double flops = BenchWork.decodeFlops(hQ, (long) b * sQ * topk, dQk, dV);
            for (DataType t : types()) {
                cases.add(sparseDecodeCase("sparse decode, FP8 V32", t, shape, flops, CacheLayout.V32, b, sQ, hQ, dQk, dV,
                        topk, tokens, bs, null, 0, 0).fullOnly(t != DataType.FLOAT).note("q in " + tag(t)));
            }
            cases.add(sparseDecodeCase("sparse decode, BF16 cache", DataType.BFLOAT16, shape, flops, null, b, sQ, hQ, dQk, dV,
                    topk, tokens, bs, null, 0, 0).note("no GPU peer offers sparse decode on BF16"));
        }
        {
            int topk = 128, extraTopk = 256, extraTokens = quick ? 256 : 512, dQk = 512, dV = 512;
            String shape = "b " + b + ", s_q " + sQ + ", h_q " + hQ + ", d " + dQk + "/" + dV + ", topk " + topk
                    + " + extra " + extraTopk;
            double flops = BenchWork.decodeFlops(hQ, (long) b * sQ * (topk + extraTopk), dQk, dV);
            for (DataType t : types()) {
                cases.add(sparseDecodeCase("sparse decode, FP8 MODEL1", t, shape, flops, CacheLayout.MODEL1, b, sQ, hQ,
                        dQk, dV, topk, tokens, bs, CacheLayout.MODEL1, extraTopk, extraTokens)
                        .fullOnly(t != DataType.FLOAT).note("q in " + tag(t) + "; both key sets MODEL1, one softmax"));
            }
        }
    }

    /** layout null: a BF16 PLAIN cache (q must then be bf16 too). */
    private BenchCase sparseDecodeCase(String op, DataType qType, String shape, double flops, CacheLayout layout,
                                       int b, int sQ, int hQ, int dQk, int dV, int topk, int tokens, int bs,
                                       CacheLayout extraLayout, int extraTopk, int extraTokens) {
        BenchCase c = BenchCase.of(op, "mla4j, eager Nd4j.exec", tag(qType), shape).flops(flops);
        return c.setup(() -> {
            BenchData.Paged p = layout == null ? data.plainCache(DataType.BFLOAT16, b, tokens, tokens, bs, dQk)
                    : data.fp8Cache(layout, b, tokens, tokens, bs);
            int[][][] idx = data.decodeIndices(p, b, sQ, topk);
            double bytes = (double) qType.width() * b * sQ * hQ * (dQk + dV)
                    + p.rowBytes * BenchWork.uniqueValid(BenchData.flatten(idx));
            SparseDecode.Options o = new SparseDecode.Options(dV);
            if (layout != null) o.fp8(layout, bs);
            INDArray extraCache = null, extraIdx = null;
            if (extraLayout != null) {
                BenchData.Paged e = data.fp8Cache(extraLayout, b, extraTokens, extraTokens, bs);
                int[][][] eIdx = data.decodeIndices(e, b, sQ, extraTopk);
                bytes += e.rowBytes * BenchWork.uniqueValid(BenchData.flatten(eIdx));
                extraCache = e.cache;
                extraIdx = Nd4j.createFromArray(eIdx);
                o.extraFp8(extraLayout, bs);
            }
            c.bytes(bytes);
            return eager(new SparseDecode(data.randn(qType, b, sQ, hQ, dQk), p.cache, Nd4j.createFromArray(idx), null,
                    extraCache, extraIdx, null, null, null, o));
        });
    }

    // ---------------------------------------------------------------- sparse prefill

    private void sparsePrefill() {
        int sQ = quick ? 32 : 256, sKv = quick ? 1024 : 2048, hQ = 16, topk = 256, dQk = 576, dV = 512;
        String shape = "s_q " + sQ + ", s_kv " + sKv + ", h_q " + hQ + ", h_kv 1, topk " + topk + ", d " + dQk + "/" + dV;
        double fwd = 2.0 * (dQk + dV) * hQ * (double) sQ * topk;
        for (DataType t : types()) {
            cases.add(BenchCase.of("sparse prefill fwd", "mla4j, eager Nd4j.exec", tag(t), shape)
                    .flops(fwd).fullOnly(t != DataType.FLOAT)
                    .setup(() -> eager(prefillForward(t, sQ, sKv, hQ, topk, dQk, dV))));
        }
        for (DataType t : types()) {
            cases.add(BenchCase.of("sparse prefill bwd", "mla4j, eager Nd4j.exec", tag(t), shape)
                    .flops(BenchWork.BACKWARD_FACTOR * fwd).fullOnly(t != DataType.FLOAT)
                    .note("dq and dkv (scatter-add over queries); no GPU peer on Hopper")
                    .setup(() -> {
                        SparsePrefill f = prefillForward(t, sQ, sKv, hQ, topk, dQk, dV);
                        INDArray[] res = Nd4j.exec(f);
                        List<INDArray> in = new ArrayList<>(f.inputArguments());
                        in.add(res[0]);
                        in.add(res[2]);
                        in.add(data.randn(t, res[0].shape()));
                        return eager(new SparsePrefillBp(in.toArray(new INDArray[0]), f));
                    }));
        }
    }

    private SparsePrefill prefillForward(DataType t, int sQ, int sKv, int hQ, int topk, int dQk, int dV) {
        INDArray idx = Nd4j.createFromArray(data.prefillIndices(sQ, sKv, topk));
        return new SparsePrefill(data.randn(t, sQ, hQ, dQk), data.randn(t, sKv, 1, dQk), idx, null, null, null, dV, 0.0, null);
    }

    // ---------------------------------------------------------------- KV cache ops

    private void kvCacheOps() {
        int bs = 64, blocks = quick ? 32 : 128;
        for (CacheLayout l : new CacheLayout[] {CacheLayout.V32, CacheLayout.MODEL1}) {
            for (DataType t : types()) {
                String shape = blocks * bs + " tokens of " + l.dQk() + " (" + blocks + " blocks of " + bs + ")";
                BenchCase c = BenchCase.of("kv quantize, " + l.name(), "mla4j, eager Nd4j.exec", tag(t), shape)
                        .memoryBound().fullOnly(t != DataType.FLOAT || l == CacheLayout.MODEL1).group(MEMORY_GROUP)
                        .note("bytes = rows read + FP8 cache written");
                cases.add(c.setup(() -> {
                    INDArray kv = data.randn(t, blocks, bs, l.dQk());
                    c.bytes(BenchData.bytes(kv) + (double) blocks * l.blockBytes(bs));
                    return eager(new KvQuantize(kv, l));
                }));
            }
        }
        int b = 4, tokens = 1024;
        for (int n : new int[] {1, 128}) {
            for (CacheLayout l : new CacheLayout[] {CacheLayout.V32, CacheLayout.PLAIN}) {
                String op = "kv append, " + (l.isFp8() ? l.name() : "BF16");
                String shape = "b " + b + ", " + n + " new token" + (n > 1 ? "s" : "") + " each, d 576, at position " + tokens;
                BenchCase c = BenchCase.of(op, "mla4j, eager Nd4j.exec", "bf16", shape).memoryBound()
                        .fullOnly(n > 1 && !l.isFp8())
                        .note((n == 1 ? "a decode step" : "a prefill chunk") + "; bytes = rows read + cache rows written");
                cases.add(c.setup(() -> {
                    BenchData.Paged p = l.isFp8() ? data.fp8Cache(l, b, tokens, tokens + 128, bs)
                            : data.plainCache(DataType.BFLOAT16, b, tokens, tokens + 128, bs, 576);
                    INDArray rows = data.randn(DataType.BFLOAT16, b, n, 576);
                    c.bytes(BenchData.bytes(rows) + p.rowBytes * b * n);
                    return eager(KvAppend.inPlace(p.cache, p.blockTable, p.seqlens, rows, l, bs));
                }));
            }
        }
    }

    // ---------------------------------------------------------------- indexer, top-k, RoPE

    private void indexer() {
        int b = 1, h = 16, d = 128, sQ = quick ? 64 : 256, sK = quick ? 1024 : 2048, topk = quick ? 256 : 512;
        String shape = "b " + b + ", s_q " + sQ + ", s_k " + sK + ", h " + h + ", d " + d + ", causal";
        double flops = BenchWork.indexerFlops(b, h, d, sQ, sK, true);
        String group = "lightning indexer, " + shape + " (rate against the gemm ceiling)";
        for (String kind : new String[] {"f32", "bf16", "fp8"}) {
            cases.add(BenchCase.of("indexer top-" + topk + " (fused)", "mla4j, eager Nd4j.exec", kind, shape)
                    .flops(flops).fullOnly(!kind.equals("f32")).group(group)
                    .note(kind.equals("fp8") ? "q, k float8_e4m3 with float32 scales" : "no [s_q, s_k] matrix")
                    .setup(() -> {
                        INDArray w = data.randn(DataType.FLOAT, b, sQ, h);
                        if (kind.equals("fp8")) {
                            return eager(new IndexerTopK(data.fp8(b, sQ, h, d), data.fp8(b, sK, d), w,
                                    BenchData.full(1f / 64, b, sQ, h), BenchData.full(1f / 64, b, sK), true, topk));
                        }
                        DataType t = kind.equals("f32") ? DataType.FLOAT : DataType.BFLOAT16;
                        return eager(new IndexerTopK(data.randn(t, b, sQ, h, d), data.randn(t, b, sK, d),
                                t == DataType.FLOAT ? w : w.castTo(t), null, null, true, topk));
                    }));
        }
        cases.add(BenchCase.of("indexer scores", "mla4j, eager Nd4j.exec", "f32", shape).flops(flops).fullOnly().group(group)
                .note("the [b, s_q, s_k] float32 matrix, for comparison with the fused top-k")
                .setup(() -> eager(new IndexerScores(data.randn(DataType.FLOAT, b, sQ, h, d),
                        data.randn(DataType.FLOAT, b, sK, d), data.randn(DataType.FLOAT, b, sQ, h), null, null, true))));
        BenchCase topK = BenchCase.of("top-" + topk, "mla4j, eager Nd4j.exec", "f32", sQ + " rows of " + sK)
                .memoryBound().bytes(4.0 * sQ * sK + 8.0 * sQ * topk).group(MEMORY_GROUP)
                .note("bytes = scores read + indices and values written");
        cases.add(topK.setup(() -> eager(new TopK(data.randn(DataType.FLOAT, sQ, sK), topk))));
    }

    private void rope() {
        int b = 4, s = quick ? 128 : 512, h = 16, d = 64;
        RopeConfig cfg = RopeConfig.interleaved(d, 10000);
        for (DataType t : types()) {
            BenchCase c = BenchCase.of("rope", "mla4j, eager Nd4j.exec", tag(t),
                            "b " + b + ", s " + s + ", h " + h + ", rope dim " + d + " (interleaved)")
                    .memoryBound().fullOnly(t != DataType.FLOAT).note("bytes = x read + out written + positions");
            cases.add(c.setup(() -> {
                INDArray x = data.randn(t, b, s, h, d);
                INDArray pos = BenchData.positions(b, s);
                c.bytes(2 * BenchData.bytes(x) + BenchData.bytes(pos));
                return eager(new Rope(x, pos, cfg, false));
            }));
        }
    }

    // ---------------------------------------------------------------- SameDiff's cost per call

    /**
     * What SameDiff adds to one op, side by side with the eager calls: {@code output()} against
     * the eager forward, {@code calculateGradients()} against the eager forward + backward, for
     * mla4j's attention and, as the peer, ND4J's own matrix product of about the same cost and
     * the same output size. A row's note gives the page faults one call takes (memory SameDiff
     * allocates fresh per call: the returned arrays, and in calculateGradients every array, as
     * M2.1 turns SameDiff's array cache off for the gradient function). "result closed" rows close
     * the returned arrays after each call, so that their memory is reused.
     */
    private void sameDiffOverhead() {
        int b = 1, s = quick ? 128 : 512, h = 8, dQk = 192, dV = 128;
        String shape = "b " + b + ", s " + s + ", h " + h + ", d " + dQk + "/" + dV + ", causal";
        double fwd = BenchWork.attentionFlops(b, h, s, s, dQk, dV, true);
        String op = "attention (MHA), SameDiff cost";
        String outGroup = "SameDiff output() against the eager call: mla4j attention forward, " + shape;
        String gradGroup = "SameDiff gradients against eager forward + backward: mla4j attention, " + shape;
        BenchCase eagerFwd = BenchCase.of(op, "mla4j, eager forward", "f32", shape).flops(fwd).group(outGroup);
        cases.add(eagerFwd.setup(() -> notingFaults(eagerFwd, "", eager(new Attention(data.randn(DataType.FLOAT, b, s, h, dQk),
                data.randn(DataType.FLOAT, b, s, h, dQk), data.randn(DataType.FLOAT, b, s, h, dV), null, null, null, null,
                new Attention.Options().causal(true))))));
        BenchCase sdOut = BenchCase.of(op, "mla4j, SameDiff output()", "f32", shape).flops(fwd).group(outGroup);
        cases.add(sdOut.setup(() -> notingFaults(sdOut, "",
                sameDiffOutput(mlaAttentionGraph(DataType.FLOAT, b, s, h, dQk, dV, true, false), "out"))));
        BenchCase sdOutClosed = BenchCase.of(op, "mla4j, SameDiff output(), result closed", "f32", shape).flops(fwd)
                .group(outGroup).fullOnly();
        cases.add(sdOutClosed.setup(() -> notingFaults(sdOutClosed, "the returned array is closed after each call",
                sameDiffOutputClosed(mlaAttentionGraph(DataType.FLOAT, b, s, h, dQk, dV, true, false), "out"))));
        double both = (1 + BenchWork.BACKWARD_FACTOR) * fwd;
        BenchCase eagerBoth = BenchCase.of(op, "mla4j, eager forward + backward", "f32", shape).flops(both).group(gradGroup);
        cases.add(eagerBoth.setup(() -> notingFaults(eagerBoth, "", attentionForwardBackward(b, s, h, dQk, dV))));
        BenchCase sdGrad = BenchCase.of(op, "mla4j, SameDiff gradients", "f32", shape).flops(both).group(gradGroup)
                .fullOnly();
        cases.add(sdGrad.setup(() -> notingFaults(sdGrad, "calculateGradients of sum(out) w.r.t. q, k, v",
                sameDiffGradients(mlaAttentionGraph(DataType.FLOAT, b, s, h, dQk, dV, true, true)))));

        // The peer: x [s, h d_qk] times w [h d_qk, h d_v], an output of the attention's size.
        long m = s, k = (long) h * dQk, n = (long) h * dV;
        String mmShape = m + " x " + k + " times " + k + " x " + n;
        double mm = 2.0 * m * k * n;
        String peer = "mmul, SameDiff cost";
        String mmOutGroup = "SameDiff output() against the eager call: ND4J mmul (built-in peer), " + mmShape;
        String mmGradGroup = "SameDiff gradients against eager forward + backward: ND4J mmul (built-in peer), " + mmShape;
        // Eager: Nd4j.gemm into preallocated column-major outputs (BLAS's own layout, no copy).
        BenchCase mmEager = BenchCase.of(peer, "ND4J, eager Nd4j.gemm", "f32", mmShape).flops(mm).group(mmOutGroup);
        cases.add(mmEager.setup(() -> {
            INDArray x = data.randn(DataType.FLOAT, m, k), w = data.randn(DataType.FLOAT, k, n);
            INDArray out = Nd4j.create(DataType.FLOAT, new long[] {m, n}, 'f');
            return notingFaults(mmEager, "", () -> Nd4j.gemm(x, w, out, false, false, 1.0, 0.0));
        }));
        BenchCase mmOut = BenchCase.of(peer, "ND4J, SameDiff output()", "f32", mmShape).flops(mm).group(mmOutGroup);
        cases.add(mmOut.setup(() -> notingFaults(mmOut, "", sameDiffOutput(mmulGraph(m, k, n, false), "out"))));
        BenchCase mmOutClosed = BenchCase.of(peer, "ND4J, SameDiff output(), result closed", "f32", mmShape).flops(mm)
                .group(mmOutGroup).fullOnly();
        cases.add(mmOutClosed.setup(() -> notingFaults(mmOutClosed, "the returned array is closed after each call",
                sameDiffOutputClosed(mmulGraph(m, k, n, false), "out"))));
        BenchCase mmBoth = BenchCase.of(peer, "ND4J, eager forward + backward", "f32", mmShape).flops(3 * mm)
                .group(mmGradGroup);
        cases.add(mmBoth.setup(() -> {
            INDArray x = data.randn(DataType.FLOAT, m, k), w = data.randn(DataType.FLOAT, k, n);
            INDArray dOut = Nd4j.ones(DataType.FLOAT, m, n);
            INDArray out = Nd4j.create(DataType.FLOAT, new long[] {m, n}, 'f');
            INDArray dx = Nd4j.create(DataType.FLOAT, new long[] {m, k}, 'f');
            INDArray dw = Nd4j.create(DataType.FLOAT, new long[] {k, n}, 'f');
            return notingFaults(mmBoth, "out = x w; dx = dOut w^T; dw = x^T dOut (Nd4j.gemm)", () -> {
                Nd4j.gemm(x, w, out, false, false, 1.0, 0.0);
                Nd4j.gemm(dOut, w, dx, false, true, 1.0, 0.0);
                Nd4j.gemm(x, dOut, dw, true, false, 1.0, 0.0);
            });
        }));
        BenchCase mmGrad = BenchCase.of(peer, "ND4J, SameDiff gradients", "f32", mmShape).flops(3 * mm)
                .group(mmGradGroup).fullOnly();
        cases.add(mmGrad.setup(() -> notingFaults(mmGrad, "calculateGradients of sum(x w) w.r.t. x, w",
                sameDiffGradients(mmulGraph(m, k, n, true)))));
    }

    private SameDiff mmulGraph(long m, long k, long n, boolean withLoss) {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.var("x", data.randn(DataType.FLOAT, m, k));
        SDVariable w = sd.var("w", data.randn(DataType.FLOAT, k, n).muli(1 / Math.sqrt(k)));
        SDVariable out = x.mmul(w).rename("out");
        if (withLoss) sd.setLossVariables(out.sum("loss"));
        return sd;
    }

    /** Eager causal attention forward then backward (dOut all ones: the gradient of sum(out)). */
    private Runnable attentionForwardBackward(int b, int s, int h, int dQk, int dV) {
        INDArray q = data.randn(DataType.FLOAT, b, s, h, dQk), k = data.randn(DataType.FLOAT, b, s, h, dQk);
        INDArray v = data.randn(DataType.FLOAT, b, s, h, dV);
        Attention fwd = new Attention(q, k, v, null, null, null, null, new Attention.Options().causal(true));
        INDArray[] res = Nd4j.exec(fwd);
        AttentionBp bwd = new AttentionBp(new INDArray[] {q, k, v, res[0], res[1], Nd4j.onesLike(res[0])}, fwd);
        return () -> {
            Nd4j.exec(fwd);
            Nd4j.exec(bwd);
        };
    }

    /** Runs the body a few times and notes on c how many page faults one call takes. */
    private static Runnable notingFaults(BenchCase c, String note, Runnable body) {
        for (int i = 0; i < 2; i++) body.run();
        long before = minorFaults();
        int runs = 3;
        for (int i = 0; i < runs; i++) body.run();
        long after = minorFaults();
        String faults = before < 0 || after < 0 ? "page faults n/a" : (after - before) / runs + " page faults a call";
        c.note(note.isEmpty() ? faults : note + "; " + faults);
        return body;
    }

    /** Minor page faults of this process so far (/proc/self/stat), or -1. */
    private static long minorFaults() {
        try {
            String stat = Files.readString(Path.of("/proc/self/stat"));
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return Long.parseLong(f[7]);  // field 10 of the file, counted after the command name
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    // ---------------------------------------------------------------- helpers

    private static List<DataType> types() {
        return List.of(DataType.FLOAT, DataType.BFLOAT16);
    }

    private static String tag(DataType t) {
        switch (t) {
            case FLOAT: return "f32";
            case BFLOAT16: return "bf16";
            case HALF: return "f16";
            case DOUBLE: return "f64";
            default: return t.name().toLowerCase();
        }
    }

    /** Runs one op instance again and again; its outputs are allocated on the first run and reused. */
    private static Runnable eager(CustomOp op) {
        return () -> Nd4j.exec(op);
    }

    private static Runnable sameDiffOutput(SameDiff sd, String output) {
        return () -> sd.output(NO_PLACEHOLDERS, output);
    }

    private static Runnable sameDiffOutputClosed(SameDiff sd, String output) {
        return () -> sd.output(NO_PLACEHOLDERS, output).get(output).close();
    }

    private static Runnable sameDiffGradients(SameDiff sd) {
        List<String> vars = new ArrayList<>();
        for (SDVariable v : sd.variables()) {
            if (v.getVariableType() == VariableType.VARIABLE) vars.add(v.name());
        }
        return () -> sd.calculateGradients(NO_PLACEHOLDERS, vars);
    }
}
