package org.mla4j.ops;

import java.util.ArrayList;
import java.util.List;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * Backward of {@link Attention}: inputs are the forward's inputs, then its {@code out}, its
 * {@code lse} and {@code dOut}; outputs {@code dq}, {@code dk}, {@code dv} (when the forward
 * has v; without v the value path adds into dk) and {@code dSink} (when it has a sink).
 */
public class AttentionBp extends MlaOp {
    public static final String OP_NAME = "mla_attention_bp";

    public AttentionBp() {}

    AttentionBp(SameDiff sd, SDVariable[] inputs, Attention fwd) {
        super(sd, inputs);
        addIArgument(fwd.iArgs());
        addTArgument(fwd.tArgs());
    }

    /** Eager use: the forward's inputs, then out, lse, dOut. */
    public AttentionBp(INDArray[] inputs, Attention fwd) {
        super(inputs, null);
        addIArgument(fwd.iArgs());
        addTArgument(fwd.tArgs());
    }

    private Attention fwd() {
        Attention f = new Attention();
        f.addIArgument(iArgs());
        f.addTArgument(tArgs());
        return f;
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() {
        Attention f = fwd();
        return 2 + (f.hasV() ? 1 : 0) + (f.hasSink() ? 1 : 0);
    }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        Attention f = fwd();
        List<DataType> t = new ArrayList<>(List.of(in.get(0), in.get(0)));
        if (f.hasV()) t.add(in.get(0));
        if (f.hasSink()) t.add(DataType.FLOAT);
        return t;
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        Attention f = fwd();
        int n = f.numForwardInputs();
        requireInputs(in, n + 3, "(forward inputs, out, lse, dOut)");
        Attention.validate(OP_NAME, in, f);
        INDArray q = in[0], k = in[1];
        List<LongShapeDescriptor> fwdShapes = f.outputShapes(java.util.Arrays.copyOf(in, n));
        Check.shape(OP_NAME, "out", in[n], fwdShapes.get(0).getShape());
        Check.sameType(OP_NAME, "out", in[n], "q", q);
        Check.shape(OP_NAME, "lse", in[n + 1], fwdShapes.get(1).getShape());
        Check.type(OP_NAME, "lse", in[n + 1], DataType.FLOAT);
        Check.shape(OP_NAME, "dOut", in[n + 2], fwdShapes.get(0).getShape());
        Check.sameType(OP_NAME, "dOut", in[n + 2], "q", q);
        List<LongShapeDescriptor> l = list(desc(q.dataType(), q.shape()), desc(k.dataType(), k.shape()));
        if (f.hasV()) l.add(desc(in[2].dataType(), in[2].shape()));
        if (f.hasSink()) l.add(desc(DataType.FLOAT, in[f.sinkSlot()].shape()));
        return l;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        Attention f = fwd();
        int n = f.numForwardInputs();
        try (MlaLib.mla_attention_params p = NativeLib.params(MlaLib.mla_attention_params.class, MlaLib.mla_attention_params::new)) {
            f.fillCommon(p, in);
            p.out(NativeLib.ptr(in[n])).lse(NativeLib.floatPtr(in[n + 1])).dout(NativeLib.ptr(in[n + 2]));
            Attention.strides(in[n], p.out_stride());
            Attention.strides(in[n + 2], p.dout_stride());
            int next = 0;
            p.dq(NativeLib.ptr(out[next++])).dk(NativeLib.ptr(out[next++]));
            p.dv(f.hasV() ? NativeLib.ptr(out[next++]) : null);
            p.dsink(f.hasSink() ? NativeLib.floatPtr(out[next]) : null);
            NativeLib.check(MlaLib.mla_attention_bwd(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "second derivatives are not supported");
    }
}
