package org.mla4j.tests.reference;

/**
 * Number formats of the FP8 caches, decoded and encoded from their definitions (not from the
 * library): float8_e4m3fn, bfloat16, UE8M0 scale bytes, and the power-of-two tile scale.
 */
public final class Formats {
    private Formats() {}

    /** Largest finite float8_e4m3fn value. */
    public static final double E4M3_MAX = 448.0;

    /**
     * float8_e4m3fn: bit 7 sign, bits 6-3 exponent (bias 7), bits 2-0 mantissa. Exponent 0 is
     * subnormal (0.mmm x 2^-6); S.1111.111 is NaN; there are no infinities.
     */
    public static double e4m3(int bits) {
        int b = bits & 0xff;
        boolean negative = (b & 0x80) != 0;
        int exponent = (b >> 3) & 0xf;
        int mantissa = b & 0x7;
        if (exponent == 0xf && mantissa == 0x7) return Double.NaN;
        double magnitude = exponent == 0
                ? (mantissa / 8.0) * Math.scalb(1.0, -6)
                : (1.0 + mantissa / 8.0) * Math.scalb(1.0, exponent - 7);
        return negative ? -magnitude : magnitude;
    }

    /** The 127 non-negative finite e4m3 values, index = code (0x00 .. 0x7e), increasing. */
    private static final double[] E4M3_VALUES = new double[0x7f];

    static {
        for (int c = 0; c < 0x7f; c++) E4M3_VALUES[c] = e4m3(c);
    }

    /**
     * Nearest e4m3 code, ties to the code with an even mantissa, magnitudes from 448 up
     * saturating to 448 (0x7e / 0xfe); NaN gives 0x7f.
     */
    public static int toE4m3(double x) {
        if (Double.isNaN(x)) return 0x7f;
        int sign = Double.doubleToRawLongBits(x) < 0 ? 0x80 : 0;
        double a = Math.abs(x);
        if (a >= E4M3_MAX) return sign | 0x7e;
        int found = java.util.Arrays.binarySearch(E4M3_VALUES, a);
        if (found >= 0) return sign | found;
        int lo = -found - 2; // largest value below a
        int code = lo;
        double below = a - E4M3_VALUES[lo], above = E4M3_VALUES[lo + 1] - a;
        if (above < below || (above == below && (lo & 1) == 1)) code = lo + 1;
        return sign | code;
    }

    /** bfloat16 bits to value: the upper half of a float32. */
    public static double bf16(int bits) {
        return Float.intBitsToFloat((bits & 0xffff) << 16);
    }

    /** Nearest bfloat16 of a float32 value, ties to even; NaN stays NaN. */
    public static int toBf16(float f) {
        if (Float.isNaN(f)) return 0x7fc0;
        int bits = Float.floatToRawIntBits(f);
        int down = bits >>> 16;
        int up = down + 1;
        double below = Math.abs((double) f - bf16(down)), above = Math.abs(bf16(up) - (double) f);
        if ((bits & 0xffff) == 0) return down;
        if (above < below || (above == below && (down & 1) == 1)) return up & 0xffff;
        return down;
    }

    /** UE8M0 scale byte: value 2^(byte - 127). */
    public static double ue8m0(int bits) {
        return Math.scalb(1.0, (bits & 0xff) - 127);
    }

    /** The byte of a power-of-two scale in UE8M0. */
    public static int toUe8m0(double powerOfTwo) {
        return Math.getExponent(powerOfTwo) + 127;
    }

    /**
     * Tile scale of ops.md: {@code 2^ceil(log2(max(amax / 448, 1e-4)))}, with amax / 448 and
     * the floor evaluated in float32 like the kernels' inputs.
     */
    public static double tileScale(double amax) {
        float s = Math.max((float) amax / 448f, 1e-4f);
        int e = Math.getExponent(s);
        return Math.scalb(1.0, s == Math.scalb(1.0f, e) ? e : e + 1);
    }
}
