package org.mla4j.samples;

import java.util.Map;
import org.mla4j.Mla4j;
import org.mla4j.cache.DeviceKvCache;
import org.mla4j.cache.KvCache;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.gpu.Gpu;
import org.mla4j.layers.MlaV3Block;
import org.mla4j.layers.MlaV3Config;
import org.mla4j.layers.MlaV3Decoder;
import org.mla4j.ops.CacheLayout;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * The main sample: a small DeepSeek-V3-style MLA block built in SameDiff runs a prefill over a
 * whole sequence (MHA mode, the mla_attention op), then decodes the same tokens one at a time
 * in absorbed mode from paged KV caches in BF16 and in FP8 (V32 layout), and shows that each
 * decode step reproduces the prefill output for its position.
 *
 * <p>Options: {@code --batch}, {@code --seq-len}, {@code --block-size}, {@code --seed} (defaults 2,
 * 48, 16, 7), {@code --help}.
 */
@Command(name = "MlaDecodeSample", sortOptions = false, showDefaultValues = true,
        description = "A V3-style MLA block: SameDiff prefill vs token-by-token decode from BF16 and FP8 paged caches.")
public final class MlaDecodeSample {
    @Option(names = "--batch", description = "sequences")
    int batch = 2;
    @Option(names = "--seq-len", description = "tokens per sequence")
    int seqLen = 48;
    @Option(names = "--block-size", description = "tokens per KV cache block")
    int blockSize = 16;
    @Option(names = "--seed", description = "random seed of the weights and inputs")
    long seed = 7;
    @Option(names = {"-h", "--help"}, usageHelp = true, description = "show this help")
    boolean help;

    public static void main(String[] args) {
        MlaDecodeSample o = new MlaDecodeSample();
        if (!SampleCli.parse(o, args)) return;
        int batch = o.batch, seqLen = o.seqLen, blockSize = o.blockSize;
        long seed = o.seed;

        Mla4j.install();
        MlaV3Config cfg = MlaV3Config.small();
        System.out.println("mla4j decode sample");
        System.out.println("  native library : " + Mla4j.nativeInfo());
        System.out.println("  block          : " + cfg);
        System.out.printf("  batch %d, %d tokens, KV cache blocks of %d tokens%n%n", batch, seqLen, blockSize);

        // 1. Build the block and run a prefill over the whole sequence (MHA mode).
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.FLOAT, -1, -1, cfg.dModel);
        SDVariable pos = sd.placeHolder("pos", DataType.INT, -1, -1);
        MlaV3Block block = new MlaV3Block(sd, "attn", cfg, DataType.FLOAT, seed);
        SDVariable y = block.forward(x, pos).rename("y");

        Nd4j.getRandom().setSeed(seed + 1);
        INDArray xs = Nd4j.randn(DataType.FLOAT, batch, seqLen, cfg.dModel);
        INDArray positions = Nd4j.create(DataType.INT, batch, seqLen);
        for (int i = 0; i < batch; i++) for (int t = 0; t < seqLen; t++) positions.putScalar(i, t, t);
        long t0 = System.nanoTime();
        INDArray prefill = sd.output(Map.of("x", xs, "pos", positions), "y").get("y");
        double prefillMs = (System.nanoTime() - t0) / 1e6;
        System.out.printf("prefill (SameDiff, MHA mode, d_qk %d / d_v %d): output %s in %.1f ms%n%n",
                cfg.dQk(), cfg.vHead, java.util.Arrays.toString(prefill.shape()), prefillMs);

        // 2. Decode token by token from two paged caches (absorbed mode: one latent row per token).
        int blocksPerSeq = (seqLen + blockSize - 1) / blockSize;
        // With -Dmla4j.device=gpu (and a GPU) the caches live on the device: append and decode
        // run there and only each step's small tensors cross.
        int device = Mla4j.device();
        CacheLayout fp8Layout = CacheLayout.v32(cfg.kvLora, cfg.qkRope, 16);
        KvCache bf16 = device >= 0
                ? DeviceKvCache.plain(device, DataType.BFLOAT16, cfg.dQkAbsorbed(), blockSize, batch * blocksPerSeq, batch, blocksPerSeq)
                : PagedKvCache.plain(DataType.BFLOAT16, cfg.dQkAbsorbed(), blockSize, batch * blocksPerSeq, batch, blocksPerSeq);
        KvCache fp8 = device >= 0
                ? DeviceKvCache.fp8(device, fp8Layout, blockSize, batch * blocksPerSeq, batch, blocksPerSeq)
                : PagedKvCache.fp8(fp8Layout, blockSize, batch * blocksPerSeq, batch, blocksPerSeq);
        System.out.println("paged caches on " + (device >= 0 ? "GPU " + device + " (" + Gpu.describe(device) + ")" : "the host")
                + (device >= 0 ? "" : "; -Dmla4j.device=gpu puts them on a GPU"));
        MlaV3Decoder decoder = new MlaV3Decoder(block);

        System.out.println("decode (absorbed mode, dense decode over the paged cache) vs prefill, relative error per step:");
        System.out.println(" position | BF16 cache | FP8 V32 cache | BF16 step ms | FP8 step ms");
        System.out.println("----------+------------+---------------+--------------+------------");
        double maxBf16 = 0, maxFp8 = 0, msBf16 = 0, msFp8 = 0;
        for (int t = 0; t < seqLen; t++) {
            INDArray xt = xs.get(NDArrayIndex.all(), NDArrayIndex.point(t), NDArrayIndex.all()).dup('c');
            INDArray want = prefill.get(NDArrayIndex.all(), NDArrayIndex.point(t), NDArrayIndex.all());
            int[] p = new int[batch];
            java.util.Arrays.fill(p, t);
            long s0 = System.nanoTime();
            INDArray gotBf16 = decoder.step(xt, p, bf16);
            long s1 = System.nanoTime();
            INDArray gotFp8 = decoder.step(xt, p, fp8);
            long s2 = System.nanoTime();
            double eBf16 = relErr(gotBf16, want), eFp8 = relErr(gotFp8, want);
            maxBf16 = Math.max(maxBf16, eBf16);
            maxFp8 = Math.max(maxFp8, eFp8);
            msBf16 += (s1 - s0) / 1e6;
            msFp8 += (s2 - s1) / 1e6;
            if (t < 4 || t % 8 == 7 || t == seqLen - 1) {
                System.out.printf(" %8d | %10.2e | %13.2e | %12.2f | %10.2f%n", t, eBf16, eFp8, (s1 - s0) / 1e6, (s2 - s1) / 1e6);
            }
        }

        long mhaBytes = (long) cfg.heads * (cfg.dQk() + cfg.vHead) * 2;
        long bf16Bytes = (long) cfg.dQkAbsorbed() * 2;
        long fp8Bytes = fp8Layout.blockBytes(blockSize) / blockSize;
        System.out.println();
        System.out.println(" KV cache per token | bytes");
        System.out.println("--------------------+------");
        System.out.printf(" MHA keys+values bf16 | %d%n", mhaBytes);
        System.out.printf(" MLA latent, BF16     | %d%n", bf16Bytes);
        System.out.printf(" MLA latent, FP8 V32  | %d%n", fp8Bytes);
        System.out.println();
        System.out.printf("max relative error: BF16 cache %.2e, FP8 cache %.2e; mean step %.2f ms (BF16), %.2f ms (FP8)%n",
                maxBf16, maxFp8, msBf16 / seqLen, msFp8 / seqLen);
        boolean ok = maxBf16 < 2e-2 && maxFp8 < 8e-2;
        System.out.println(ok ? "decode matches prefill." : "MISMATCH: decode does not match prefill");
        bf16.close();
        fp8.close();
        if (!ok) System.exit(1);
    }

    static double relErr(INDArray got, INDArray want) {
        INDArray g = got.castTo(DataType.DOUBLE), w = want.castTo(DataType.DOUBLE);
        return g.sub(w).norm2Number().doubleValue() / Math.max(1e-30, w.norm2Number().doubleValue());
    }
}
