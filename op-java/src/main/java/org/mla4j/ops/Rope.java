package org.mla4j.ops;

import java.util.List;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * Rotary position embedding (ops.md section 7) of {@code x [n, d]}, {@code [n, h, d]} or
 * {@code [b, s, h, d]} by {@code positions int32} ({@code [n]} or {@code [b, s]}: one per token,
 * shared by its heads); the {@link RopeConfig} says which dims, which pairing, which
 * frequencies (YaRN included). {@code inverse} rotates by R(-p). Output: x's shape and type.
 * The gradient is the inverse rotation of the incoming gradient.
 */
public class Rope extends MlaOp {
    public static final String OP_NAME = "mla_rope";
    // iargs: inverse, rope (4). targs: rope (4)

    public Rope() {}

    public Rope(SameDiff sd, SDVariable x, SDVariable positions, RopeConfig rope, boolean inverse) {
        super(sd, new SDVariable[] {x, positions});
        addIArgument(inverse ? 1 : 0);
        rope.addArgs(this);
    }

    public Rope(INDArray x, INDArray positions, RopeConfig rope, boolean inverse) {
        super(Inputs.of(x, positions), null);
        addIArgument(inverse ? 1 : 0);
        rope.addArgs(this);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 1; }

    boolean inverse() { return iarg(0) != 0; }

    RopeConfig rope() { return RopeConfig.fromArgs(iArguments, 1, tArguments, 0); }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(in.get(0));
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, 2, "(x, positions)");
        INDArray x = in[0], pos = in[1];
        Check.floatType(OP_NAME, "x", x);
        if (x.rank() < 2 || x.rank() > 4) {
            throw Check.fail(OP_NAME, "x must have rank 2 [n, d], 3 [n, h, d] or 4 [b, s, h, d], got shape "
                    + java.util.Arrays.toString(x.shape()));
        }
        Check.type(OP_NAME, "positions", pos, DataType.INT);
        long tokens = x.rank() == 2 ? x.size(0) : x.length() / (x.size(x.rank() - 1) * x.size(x.rank() - 2));
        if (pos.length() != tokens) {
            throw Check.fail(OP_NAME, "positions must hold one entry per token (" + tokens + "), got " + pos.length());
        }
        RopeConfig r = rope();
        long d = x.size(x.rank() - 1);
        long start = r.offset < 0 ? d - r.ropeDim : r.offset;
        if (r.ropeDim <= 0 || r.ropeDim % 2 != 0 || start < 0 || start + r.ropeDim > d) {
            throw Check.fail(OP_NAME, "rope dims [" + start + ", " + (start + r.ropeDim) + ") (ropeDim "
                    + r.ropeDim + ", even and > 0) must lie within x's last dim " + d);
        }
        return list(desc(x.dataType(), x.shape()));
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        INDArray x = in[0];
        long d = x.size(x.rank() - 1);
        long h = x.rank() == 2 ? 1 : x.size(x.rank() - 2);
        long n = x.length() / (d * h);
        try (MlaLib.mla_rope_params p = NativeLib.params(MlaLib.mla_rope_params.class, MlaLib.mla_rope_params::new)) {
            p.dtype(NativeLib.dtype(x.dataType())).n(n).h(h).d(d).x(NativeLib.ptr(x))
                    .x_stride(0, h * d).x_stride(1, d).positions(NativeLib.intPtr(in[1]))
                    .inverse(inverse() ? 1 : 0).out(NativeLib.ptr(out[0]));
            rope().fill(p.rope());
            p.exec().device(-1).num_threads(0);
            NativeLib.check(MlaLib.mla_rope_apply(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        SDVariable[] a = args();
        SDVariable dx = new Rope(sameDiff, grads.get(0), a[1], rope(), !inverse()).outputVariable();
        return List.of(dx, sameDiff.zerosLike(a[1]));
    }
}
