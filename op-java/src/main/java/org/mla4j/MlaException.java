package org.mla4j;

/**
 * Bad input to an mla4j op, or a failure of the native library. The message names the op, the
 * argument, what was expected and what arrived, e.g.
 * {@code mla_dense_decode: q must have rank 4 [b, s_q, h_q, d_qk], got shape [2, 3]}.
 */
public class MlaException extends IllegalArgumentException {
    public MlaException(String message) {
        super(message);
    }
}
