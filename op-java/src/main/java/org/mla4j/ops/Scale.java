package org.mla4j.ops;

/** The softmax scale argument: a positive value is used as given, anything else means 1/sqrt(d_qk). */
final class Scale {
    private Scale() {}

    static double resolve(double arg, long dQk) {
        return arg > 0 && Double.isFinite(arg) ? arg : 1.0 / Math.sqrt(dQk);
    }
}
