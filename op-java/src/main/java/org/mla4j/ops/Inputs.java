package org.mla4j.ops;

import java.util.ArrayList;
import java.util.List;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Builds an op's input list, leaving out optional inputs that are null. */
final class Inputs {
    private Inputs() {}

    static SDVariable[] of(SDVariable... vars) {
        List<SDVariable> l = new ArrayList<>();
        for (SDVariable v : vars) if (v != null) l.add(v);
        return l.toArray(new SDVariable[0]);
    }

    static INDArray[] of(INDArray... arrays) {
        List<INDArray> l = new ArrayList<>();
        for (INDArray a : arrays) if (a != null) l.add(a);
        return l.toArray(new INDArray[0]);
    }
}
