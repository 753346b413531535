package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.BrokenBarrierException;
import java.util.concurrent.CyclicBarrier;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;

/**
 * The per-thread params structs of {@link NativeLib#params}: handed out zeroed, kept alive by
 * the cache across try-with-resources blocks, and a fresh struct for a nested request.
 */
class NativeParamsTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    @Test
    void aReturnedStructComesBackZeroedAndStaysAllocated() {
        long address;
        try (MlaLib.mla_topk_params p = NativeLib.params(MlaLib.mla_topk_params.class, MlaLib.mla_topk_params::new)) {
            p.rows(7).n(9).k(3);
            p.exec().device(2).num_threads(5);
            address = p.address();
        }
        try (MlaLib.mla_topk_params p = NativeLib.params(MlaLib.mla_topk_params.class, MlaLib.mla_topk_params::new)) {
            assertEquals(address, p.address(), "the same struct is handed out again on this thread");
            assertEquals(0, p.rows());
            assertEquals(0, p.n());
            assertEquals(0, p.k());
            assertEquals(0, p.exec().device());
            assertEquals(0, p.exec().num_threads());
            assertTrue(p.referenceCount() >= 2, "the cache keeps its own reference while the struct is out");
        }
    }

    @Test
    void aNestedRequestGetsAStructOfItsOwn() {
        try (MlaLib.mla_quant_params outer = NativeLib.params(MlaLib.mla_quant_params.class, MlaLib.mla_quant_params::new)) {
            outer.dtype(11);
            try (MlaLib.mla_quant_params inner = NativeLib.params(MlaLib.mla_quant_params.class, MlaLib.mla_quant_params::new)) {
                assertNotEquals(outer.address(), inner.address());
                assertEquals(0, inner.dtype());
                inner.dtype(22);
            }
            assertEquals(11, outer.dtype(), "the nested request must not touch the struct in use");
        }
    }

    @Test
    void threadsDoNotShareStructs() throws InterruptedException {
        long[] addresses = new long[2];
        CyclicBarrier bothHolding = new CyclicBarrier(2);
        Runnable take = () -> {
            try (MlaLib.mla_rope_params p = NativeLib.params(MlaLib.mla_rope_params.class, MlaLib.mla_rope_params::new)) {
                addresses[Thread.currentThread().getName().equals("first") ? 0 : 1] = p.address();
                bothHolding.await();
            } catch (InterruptedException | BrokenBarrierException e) {
                throw new IllegalStateException(e);
            }
        };
        Thread a = new Thread(take, "first");
        Thread b = new Thread(take, "second");
        a.start();
        b.start();
        a.join();
        b.join();
        assertNotEquals(0L, addresses[0]);
        assertNotEquals(addresses[0], addresses[1]);
    }
}
