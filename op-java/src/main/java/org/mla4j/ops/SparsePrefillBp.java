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
 * Backward of {@link SparsePrefill}: inputs are the forward's inputs, then its {@code out},
 * its {@code lse} and {@code dOut}; outputs {@code dq}, {@code dkv} (key and value paths
 * summed, scatter-added over queries) and, when the forward has a sink, {@code dSink}.
 */
public class SparsePrefillBp extends MlaOp {
    public static final String OP_NAME = "mla_sparse_prefill_bp";

    public SparsePrefillBp() {}

    SparsePrefillBp(SameDiff sd, SDVariable[] inputs, SparsePrefill fwd) {
        super(sd, inputs);
        addIArgument(fwd.iArgs());
        addTArgument(fwd.tArgs());
    }

    /** Eager use: forward inputs (as for {@link SparsePrefill}), then out, lse, dOut. */
    public SparsePrefillBp(INDArray[] inputs, SparsePrefill fwd) {
        super(inputs, null);
        addIArgument(fwd.iArgs());
        addTArgument(fwd.tArgs());
    }

    private SparsePrefill fwd() {
        SparsePrefill f = new SparsePrefill();
        f.addIArgument(iArgs());
        f.addTArgument(tArgs());
        return f;
    }


    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return fwd().hasSink() ? 3 : 2; }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        List<DataType> t = new ArrayList<>(List.of(in.get(0), in.get(0)));
        if (fwd().hasSink()) t.add(DataType.FLOAT);
        return t;
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        SparsePrefill f = fwd();
        int n = f.numForwardInputs();
        requireInputs(in, n + 3, "(forward inputs, out, lse, dOut)");
        SparsePrefill.validate(OP_NAME, in, f);
        INDArray q = in[0], kv = in[1];
        long sQ = q.size(0), hQ = q.size(1);
        Check.shape(OP_NAME, "out", in[n], sQ, hQ, f.dV());
        Check.shape(OP_NAME, "lse", in[n + 1], sQ, hQ);
        Check.type(OP_NAME, "lse", in[n + 1], DataType.FLOAT);
        Check.shape(OP_NAME, "dOut", in[n + 2], sQ, hQ, f.dV());
        Check.sameType(OP_NAME, "dOut", in[n + 2], "q", q);
        Check.sameType(OP_NAME, "out", in[n], "q", q);
        List<LongShapeDescriptor> l = list(desc(q.dataType(), q.shape()), desc(kv.dataType(), kv.shape()));
        if (f.hasSink()) l.add(desc(DataType.FLOAT, hQ));
        return l;
    }

    /** No CUDA kernel: under the GPU placement this op runs on the CPU ({@link #runsOn()} is -1). */
    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        SparsePrefill f = fwd();
        int n = f.numForwardInputs();
        place(ops -> {
            try (MlaLib.mla_sparse_prefill_params p = NativeLib.params(MlaLib.mla_sparse_prefill_params.class, MlaLib.mla_sparse_prefill_params::new)) {
                f.fillCommon(ops, p, in);
                INDArray o = in[n], dout = in[n + 2];
                p.out(ops.in(o)).out_stride(0, o.stride(0)).out_stride(1, o.stride(1))
                        .lse(floats(ops.in(in[n + 1])))
                        .dout(ops.in(dout)).dout_stride(0, dout.stride(0)).dout_stride(1, dout.stride(1))
                        .dq(ops.out(out[0])).dkv(ops.out(out[1]))
                        .dsink(f.hasSink() ? floats(ops.out(out[2])) : null);
                NativeLib.check(MlaLib.mla_sparse_prefill_bwd(p));
            }
        });
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "second derivatives are not supported");
    }
}
