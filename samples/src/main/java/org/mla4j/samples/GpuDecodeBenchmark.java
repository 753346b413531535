package org.mla4j.samples;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.mla4j.Mla4j;
import org.mla4j.cache.DeviceKvCache;
import org.mla4j.gpu.CudaTimer;
import org.mla4j.gpu.DeviceBuffer;
import org.mla4j.gpu.DeviceCall;
import org.mla4j.gpu.Gpu;
import org.mla4j.ops.CacheLayout;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * One dense-decode step driven from Java against the kernel alone, on a GPU: the overhead of
 * the Java path as a number. The cache is a {@link DeviceKvCache} (filled once); a step is
 * {@code cache.decode(q, ...)} from host arrays: q copied in, the kernel, out and lse copied
 * back, all waited for. The kernel-only time runs the same call with q, out and lse bound to
 * device memory, timed with CUDA events over repeated launches.
 *
 * <pre>java -cp ... org.mla4j.samples.GpuDecodeBenchmark [--quick] [--help]</pre>
 */
@Command(name = "GpuDecodeBenchmark", sortOptions = false,
        description = "Dense decode step from Java against the kernel alone, from a DeviceKvCache (needs a GPU).")
public final class GpuDecodeBenchmark {
    private static final double PEAK_TFLOPS = 790;  // measured bf16 matrix product, H200

    @Option(names = "--quick", description = "b 128, s_k 8192 only")
    boolean quick;
    @Option(names = {"-h", "--help"}, usageHelp = true, description = "show this help")
    boolean help;

    private GpuDecodeBenchmark() {}

    public static void main(String[] args) {
        GpuDecodeBenchmark o = new GpuDecodeBenchmark();
        if (!SampleCli.parse(o, args)) return;
        Mla4j.install();
        if (!Gpu.available()) {
            System.out.println("GpuDecodeBenchmark: no CUDA device (" + Mla4j.nativeInfo() + ")");
            System.exit(1);
        }
        boolean quick = o.quick;
        System.out.println("Dense decode step from Java vs kernel only: " + Gpu.describe(0));
        System.out.println("s_q 1, h_q 128, d 576/512, bf16 q, block 64, causal; medians. kernel: CUDA events over"
                + " back-to-back launches; resident step: one Java call with q / out / lse already on the device,"
                + " waited for; host step: cache.decodeInto(q, ..., out, lse) from ND4J host arrays kept between"
                + " steps (q in, out and lse back); fresh: cache.decode(q) allocating out and lse each step");
        System.out.printf("%-7s %-4s %6s | %9s %8s %6s | %11s %8s | %9s %8s %8s | %9s%n", "cache", "b", "s_k",
                "kernel us", "TFLOP/s", "of 790", "resident us", "+Java us", "host us", "+us", "MB moved", "fresh us");
        List<int[]> shapes = new ArrayList<>();
        shapes.add(new int[] {128, 8192});
        if (!quick) {
            shapes.add(new int[] {128, 4096});
            shapes.add(new int[] {16, 8192});
            shapes.add(new int[] {1, 8192});
        }
        copyRates(quick ? 1 : 3);
        for (CacheLayout layout : new CacheLayout[] {CacheLayout.PLAIN, CacheLayout.V32}) {
            for (int[] s : shapes) {
                if (layout.isFp8() && s[0] != 128) continue;
                run(layout, s[0], s[1]);
            }
        }
    }

    private static void run(CacheLayout layout, int b, int sK) {
        int hQ = 128, dQk = 576, dV = 512, bs = 64, perSeq = sK / bs;
        double scale = 1 / Math.sqrt(dQk);
        try (DeviceKvCache cache = layout.isFp8() ? DeviceKvCache.fp8(0, layout, bs, b * perSeq, b, perSeq)
                : DeviceKvCache.plain(0, DataType.BFLOAT16, dQk, bs, b * perSeq, b, perSeq)) {
            int chunk = Math.min(sK, 512);
            Nd4j.getRandom().setSeed(7);
            INDArray rows = Nd4j.randn(DataType.FLOAT, b, chunk, dQk).castTo(cache.rowType());
            for (int t = 0; t < sK; t += chunk) cache.append(rows);
            INDArray q = Nd4j.randn(DataType.FLOAT, b, 1, hQ, dQk).castTo(DataType.BFLOAT16);

            // Java step: host arrays in and out (kept between steps, as a decode loop would).
            INDArray out = Nd4j.createUninitialized(DataType.BFLOAT16, b, 1, hQ, dV);
            INDArray lse = Nd4j.createUninitialized(DataType.FLOAT, b, hQ, 1);
            int warm = 3, reps = b >= 128 ? 20 : 50;
            for (int i = 0; i < warm; i++) cache.decodeInto(q, dV, true, scale, null, null, null, out, lse);
            double[] step = new double[reps];
            for (int i = 0; i < reps; i++) {
                long t0 = System.nanoTime();
                cache.decodeInto(q, dV, true, scale, null, null, null, out, lse);
                step[i] = (System.nanoTime() - t0) / 1e3;
            }
            // The same with fresh output arrays each step (cache.decode(q, ...)).
            double[] fresh = new double[Math.min(reps, 10)];
            for (int i = 0; i < fresh.length; i++) {
                long t0 = System.nanoTime();
                cache.decode(q, dV, true, scale);
                fresh[i] = (System.nanoTime() - t0) / 1e3;
            }

            // Kernel only: q, out and lse already on the device.
            double[] kernel = new double[5];
            double[] resident = new double[reps];
            try (DeviceBuffer dq = DeviceBuffer.allocate(0, q.length() * 2);
                 DeviceBuffer dout = DeviceBuffer.allocate(0, out.length() * 2);
                 DeviceBuffer dlse = DeviceBuffer.allocate(0, lse.length() * 4);
                 CudaTimer timer = new CudaTimer(0)) {
                for (int k = 0; k < kernel.length; k++) {
                    try (DeviceCall call = DeviceCall.open(0)) {
                        call.bind(q, dq.at(0)).bind(out, dout.at(0)).bind(lse, dlse.at(0));
                        cache.decodeInto(call, q, dV, true, scale, null, null, null, out, lse);  // warm-up
                        timer.start(call.cudaStream());
                        for (int i = 0; i < reps; i++) cache.decodeInto(call, q, dV, true, scale, null, null, null, out, lse);
                        timer.stop(call.cudaStream());
                        call.finish();
                        kernel[k] = timer.elapsedMs() * 1e3 / reps;
                    }
                }
                // One step with q, out and lse on the device: the Java path without the copies.
                for (int i = 0; i < reps; i++) {
                    long t0 = System.nanoTime();
                    try (DeviceCall call = DeviceCall.open(0)) {
                        call.bind(q, dq.at(0)).bind(out, dout.at(0)).bind(lse, dlse.at(0));
                        cache.decodeInto(call, q, dV, true, scale, null, null, null, out, lse);
                        call.finish();
                    }
                    resident[i] = (System.nanoTime() - t0) / 1e3;
                }
            }
            double k = median(kernel), st = median(step), res = median(resident), fr = median(fresh);
            double flop = 2.0 * hQ * b * (double) sK * (dQk + dV);
            double copied = (q.length() + out.length()) * 2.0 + lse.length() * 4.0;
            System.out.printf("%-7s %-4d %6d | %9.1f %8.1f %5.1f%% | %11.1f %8.1f | %9.1f %8.1f %8.2f | %9.1f%n",
                    layout.isFp8() ? "fp8 v32" : "bf16", b, sK, k, flop / k / 1e6, 100 * flop / k / 1e6 / PEAK_TFLOPS,
                    res, res - k, st, st - k, copied / 1e6, fr);
        }
    }

    /**
     * Where a host step's time goes: copying an ND4J array of q's size (b 128) to the device and
     * one of out's size back, with plain copies into device buffers and through DeviceCall (its
     * staging area, as a decode step does), and allocating fresh output arrays.
     */
    private static void copyRates(int repeats) {
        long qElems = 128L * 128 * 576, outElems = 128L * 128 * 512;
        INDArray q = Nd4j.rand(DataType.FLOAT, 128, 128, 576).castTo(DataType.BFLOAT16);
        INDArray out = Nd4j.createUninitialized(DataType.BFLOAT16, 128, 128, 512);
        double[] direct = new double[2 * repeats], staged = new double[2 * repeats];
        double[] alloc = new double[repeats];
        try (DeviceBuffer dq = DeviceBuffer.allocate(0, qElems * 2); DeviceBuffer dout = DeviceBuffer.allocate(0, outElems * 2);
             org.mla4j.gpu.CudaStream s = new org.mla4j.gpu.CudaStream(0)) {
            for (int r = 0; r < 2 * repeats; r++) {
                long t0 = System.nanoTime();
                dq.upload(org.mla4j.exec.NativeLib.ptr(q), 0, qElems * 2, s);
                dout.download(org.mla4j.exec.NativeLib.ptr(out), 0, outElems * 2, s);
                s.synchronize();
                long t1 = System.nanoTime();
                try (DeviceCall call = DeviceCall.open(0)) {
                    call.in(q);
                    call.out(out);
                    call.finish();
                }
                long t2 = System.nanoTime();
                direct[r] = (t1 - t0) / 1e3;
                staged[r] = (t2 - t1) / 1e3;
            }
            for (int r = 0; r < repeats; r++) {
                long t0 = System.nanoTime();
                Nd4j.createUninitialized(DataType.BFLOAT16, 128, 1, 128, 512);
                Nd4j.createUninitialized(DataType.FLOAT, 128, 128, 1);
                alloc[r] = (System.nanoTime() - t0) / 1e3;
            }
        }
        double mb = (qElems + outElems) * 2 / 1e6;
        System.out.printf("copies of q in + out back (b 128, %.1f MB): plain copies %.0f us (%.1f GB/s), "
                + "through DeviceCall %.0f us (%.1f GB/s); new out + lse arrays %.0f us%n%n", mb, median(direct),
                mb / median(direct) * 1e3, median(staged), mb / median(staged) * 1e3, median(alloc));
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }
}
