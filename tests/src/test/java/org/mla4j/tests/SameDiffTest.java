package org.mla4j.tests;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.ops.RopeConfig;
import org.mla4j.samediff.SDMla;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.reference.RopeRef;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * mla4j ops inside SameDiff graphs: outputs survive save / load bit for bit, and gradients from
 * sd.calculateGradients match the float64 reference before and after a reload.
 */
class SameDiffTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    @TempDir
    File dir;

    private static Map<String, INDArray> run(SameDiff sd, Map<String, INDArray> feeds, String... outputs) {
        Map<String, INDArray> out = sd.output(feeds, outputs);
        Map<String, INDArray> copy = new HashMap<>();
        for (Map.Entry<String, INDArray> e : out.entrySet()) copy.put(e.getKey(), e.getValue().dup());
        return copy;
    }

    private SameDiff reload(SameDiff sd, String name) throws IOException {
        File f = new File(dir, name);
        sd.save(f, true);
        return SameDiff.load(f, true);
    }

    /** RoPE, attention with a sink and VVPA, top-k of its lse, indexer top-k feeding sparse prefill. */
    @Test
    void graphOfPluginOpsSurvivesSaveAndLoad() throws IOException {
        TestRandom r = TestRandom.create();
        int s = 6, h = 4, d = 16;
        RopeConfig rope = RopeConfig.interleaved(8, 10000).withYarn(4, 64, 32, 1);
        SameDiff sd = SameDiff.create();
        SDMla m = Mla4j.ops(sd);
        SDVariable q = sd.placeHolder("q", DataType.FLOAT, 1, s, h, d);
        SDVariable kv = sd.var("kv", Nd.floats(r.normal(s * d), 1, s, 1, d));
        SDVariable sink = sd.var("sink", Nd.floats(r.normal(h), h));
        SDVariable pos = sd.constant("pos", Nd.ints(Problems.positions(r, s, 1000), 1, s));
        SDVariable qr = m.rope(q, pos, rope, false);
        SDVariable kr = m.rope(kv, pos, rope, false);
        SDVariable[] att = m.attention(qr, kr, null, sink, pos,
                new Attention.Options().causal(true).valueFromKey(d).rope(rope));
        att[0].rename("out");
        att[1].rename("lse");
        SDVariable[] top = m.topK(att[1], 3);
        top[0].rename("topIdx");
        top[1].rename("topVal");
        SDVariable iq = sd.var("iq", Nd.floats(r.normal(s * 2 * 8), 1, s, 2, 8));
        SDVariable ik = sd.var("ik", Nd.floats(r.normal(s * 8), 1, s, 8));
        SDVariable iw = sd.var("iw", Nd.floats(r.normal(s * 2), 1, s, 2));
        SDVariable idx = sd.reshape(m.indexerTopK(iq, ik, iw, true, 3), s, 1, 3);
        SDVariable[] sp = m.sparsePrefill(sd.reshape(qr, s, h, d), sd.reshape(kr, s, 1, d), idx, null, sink, null, d, 0, null);
        sp[0].rename("sparseOut");
        String[] names = {"out", "lse", "topIdx", "topVal", "sparseOut"};

        Map<String, INDArray> feeds = Map.of("q", Nd.floats(r.normal(s * h * d), 1, s, h, d));
        Map<String, INDArray> before = run(sd, feeds, names);
        SameDiff loaded = reload(sd, "graph.sd");
        Map<String, INDArray> after = run(loaded, feeds, names);
        for (String n : names) Compare.identical(n, after.get(n), before.get(n), r.tag());
        // the loaded graph keeps working on new inputs
        Map<String, INDArray> feeds2 = Map.of("q", Nd.floats(r.normal(s * h * d), 1, s, h, d));
        Map<String, INDArray> a2 = run(loaded, feeds2, names), b2 = run(sd, feeds2, names);
        for (String n : names) Compare.identical(n + " (second input)", a2.get(n), b2.get(n), r.tag());
    }

    /** loss = sum(attention(rope(q), k, v, sink) * w) in float64: gradients vs the reference. */
    @Test
    void attentionGradientsBeforeAndAfterReload() throws IOException {
        TestRandom r = TestRandom.create();
        int b = 1, s = 4, sK = 5, h = 3, d = 8, dV = 6;
        RopeConfig rope = RopeConfig.halfSplit(4, 10000);
        int[] posQ = Problems.positions(r, s, 500);
        double[] q = r.normal(b * s * h * d), k = r.normal(b * sK * d), v = r.normal(b * sK * dV);
        double[] sink = Nd.roundTo(r.normal(h), DataType.FLOAT), w = r.normal(b * s * h * dV);

        SameDiff sd = SameDiff.create();
        SDMla m = Mla4j.ops(sd);
        SDVariable vq = sd.var("q", Nd.array(q, DataType.DOUBLE, b, s, h, d));
        SDVariable vk = sd.var("k", Nd.array(k, DataType.DOUBLE, b, sK, 1, d));
        SDVariable vv = sd.var("v", Nd.array(v, DataType.DOUBLE, b, sK, 1, dV));
        SDVariable vs = sd.var("sink", Nd.floats(sink, h));
        SDVariable pos = sd.constant("pos", Nd.ints(posQ, b, s));
        SDVariable weights = sd.constant("w", Nd.array(w, DataType.DOUBLE, b, s, h, dV));
        SDVariable out = m.attention(m.rope(vq, pos, rope, false), vk, vv, vs, null, new Attention.Options().causal(true))[0];
        sd.sum("loss", out.mul(weights));
        sd.setLossVariables("loss");

        Ref.Attention a = new Ref.Attention();
        a.hQ = h;
        a.hKv = 1;
        a.dQk = d;
        a.dV = dV;
        a.cuQ = Ref.Attention.uniform(b, s);
        a.cuK = Ref.Attention.uniform(b, sK);
        a.q = RopeRef.apply(q, b * s, h, d, posQ, rope, false);
        a.k = k;
        a.v = v;
        a.scale = Problems.defaultScale(d);
        a.causal = true;
        a.sink = sink;
        Ref.AttentionGrad g = Ref.attentionGrad(a, w);
        // the gradient of q passes back through the rotation: R(-p) dq'
        double[] dq = RopeRef.apply(g.dq, b * s, h, d, posQ, rope, true);
        String ctx = r.tag();

        Map<String, INDArray> grads = sd.calculateGradients(null, "q", "k", "v", "sink");
        check(grads, dq, g, ctx);
        SameDiff loaded = reload(sd, "grad.sd");
        Map<String, INDArray> again = loaded.calculateGradients(null, "q", "k", "v", "sink");
        check(again, dq, g, ctx + " (reloaded)");
        for (String n : new String[] {"q", "k", "v", "sink"}) Compare.identical("d" + n + " after reload", again.get(n), grads.get(n), ctx);
    }

    private static void check(Map<String, INDArray> grads, double[] dq, Ref.AttentionGrad g, String ctx) {
        Compare.close("dq", grads.get("q"), dq, 1e-9, ctx);
        Compare.close("dk", grads.get("k"), g.dk, 1e-9, ctx);
        Compare.close("dv", grads.get("v"), g.dv, 1e-9, ctx);
        Compare.close("dsink", grads.get("sink"), g.dsink, 1e-6, ctx);
    }

    /** Sparse prefill in a float64 graph: dq, dkv, dsink vs the reference, also after a reload. */
    @Test
    void sparsePrefillGradients() throws IOException {
        TestRandom r = TestRandom.create();
        int sQ = 4, sKv = 7, h = 2, d = 8, dV = 6, topk = 5;
        double[] q = r.normal(sQ * h * d), kv = r.normal(sKv * d), w = r.normal(sQ * h * dV);
        double[] sink = Nd.roundTo(r.normal(h), DataType.FLOAT);
        int[] idx = new int[sQ * topk];
        for (int i = 0; i < sQ; i++) {
            int[] pick = r.distinct(sKv, topk);
            System.arraycopy(pick, 0, idx, i * topk, topk);
            idx[i * topk + r.nextInt(topk)] = -1;
        }
        SameDiff sd = SameDiff.create();
        SDMla m = Mla4j.ops(sd);
        SDVariable vq = sd.var("q", Nd.array(q, DataType.DOUBLE, sQ, h, d));
        SDVariable vkv = sd.var("kv", Nd.array(kv, DataType.DOUBLE, sKv, 1, d));
        SDVariable vs = sd.var("sink", Nd.floats(sink, h));
        SDVariable out = m.sparsePrefill(vq, vkv, sd.constant("idx", Nd.ints(idx, sQ, 1, topk)), null, vs, null, dV, 0, null)[0];
        sd.sum("loss", out.mul(sd.constant("w", Nd.array(w, DataType.DOUBLE, sQ, h, dV))));
        sd.setLossVariables("loss");

        Ref.SparsePrefill p = new Ref.SparsePrefill();
        p.sQ = sQ;
        p.sKv = sKv;
        p.hQ = h;
        p.hKv = 1;
        p.dQk = d;
        p.dV = dV;
        p.topk = topk;
        p.q = q;
        p.kv = kv;
        p.indices = idx;
        p.scale = Problems.defaultScale(d);
        p.sink = sink;
        Ref.SparsePrefillGrad g = Ref.sparsePrefillGrad(p, w);
        for (SameDiff graph : new SameDiff[] {sd, reload(sd, "sparse.sd")}) {
            Map<String, INDArray> grads = graph.calculateGradients(null, "q", "kv", "sink");
            String ctx = (graph == sd ? "" : "reloaded; ") + r.tag();
            Compare.close("dq", grads.get("q"), g.dq, 1e-9, ctx);
            Compare.close("dkv", grads.get("kv"), g.dkv, 1e-9, ctx);
            Compare.close("dsink", grads.get("sink"), g.dsink, 1e-6, ctx);
        }
        Files.deleteIfExists(new File(dir, "sparse.sd").toPath());
    }
}
