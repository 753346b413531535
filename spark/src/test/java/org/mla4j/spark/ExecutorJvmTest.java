package org.mla4j.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.Arrays;
import java.util.List;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.spark.api.RDDTrainingApproach;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.ops.TopK;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Spark executors in JVMs of their own ({@code local-cluster[2,1,1024]}: a Spark master, two
 * workers and their executor processes, started from this test), which never call
 * {@link Mla4j#install()} themselves:
 * <ul>
 *   <li>an mla4j op run there before anything installed the plugin (the first task in each
 *       executor JVM) fails with the clear IllegalStateException that says to call
 *       Mla4j.install(), and the executor lives on;</li>
 *   <li>a network with MlaSelfAttentionLayer deserialised there (ModelSerializer bytes,
 *       broadcast) installs the plugin as it instantiates the layer, and gives the driver's
 *       outputs bit for bit;</li>
 *   <li>dl4j-spark's parameter averaging trains the network on those executors (the Direct
 *       approach: DL4J refuses to export minibatches to a local file system when the master
 *       is not local).</li>
 * </ul>
 * The executors get this test's class path ({@code spark.executor.extraClassPath}); Spark's
 * launcher, which would otherwise look for a Spark distribution, is told the Scala version and
 * that no distribution's jars are needed.
 */
class ExecutorJvmTest {

    @Test
    void executorJvmsInstallThroughTheLayerAndTrain() throws IOException {
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        SparkConf conf = new SparkConf().setMaster("local-cluster[2,1,1024]").setAppName("mla4j-executor-jvms")
                .set("spark.ui.enabled", "false")
                .set("spark.executor.extraClassPath", cp)
                .set("spark.executor.extraJavaOptions", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
                .set("spark.executorEnv.SPARK_SCALA_VERSION", "2.12")
                .set("spark.executorEnv.SPARK_TESTING", "1");
        MultiLayerNetwork net = new MultiLayerNetwork(SparkMlaTraining.network(42));
        net.init();
        Nd4j.getRandom().setSeed(5);
        INDArray x = Nd4j.randn(DataType.FLOAT, 2, SparkMlaTraining.N_IN, SparkMlaTraining.STEPS);
        INDArray expected = net.output(x);
        ByteArrayOutputStream saved = new ByteArrayOutputStream();
        ModelSerializer.writeModel(net, saved, false);
        long driverPid = ProcessHandle.current().pid();

        long t0 = System.nanoTime();
        try (JavaSparkContext sc = new JavaSparkContext(conf)) {
            Broadcast<byte[]> model = sc.broadcast(saved.toByteArray());
            Broadcast<INDArray> input = sc.broadcast(x);
            // Tasks of one executor run one after another: the first sees a fresh JVM.
            List<String> reports = sc.parallelize(Arrays.asList(0, 1, 2, 3), 4)
                    .map(i -> onExecutor(model.value(), input.value()))
                    .collect();
            List<Long> pids = reports.stream().map(r -> Long.parseLong(r.split(" ")[0])).distinct().toList();
            assertTrue(pids.stream().noneMatch(p -> p == driverPid), "tasks ran in the driver JVM: " + reports);
            float[] want = expected.dup().data().asFloat();
            for (long pid : pids) {
                long refused = reports.stream().filter(r -> r.startsWith(pid + " uninstalled-op-refused ")).count();
                assertEquals(1, refused, "the first task in executor JVM " + pid + " must see the op refused: " + reports);
            }
            for (String r : reports) {
                String[] f = r.split(" ", 5);
                assertTrue(f[1].equals("uninstalled-op-refused") || f[1].equals("already-installed"), r);
                assertEquals("installed-by-layer", f[2], r);
                String[] v = f[4].split(",");
                float[] got = new float[v.length];
                for (int i = 0; i < v.length; i++) got[i] = (float) Double.parseDouble(v[i]);
                assertTrue(Arrays.equals(want, got), "executor output differs from the driver's: " + r);
            }
            System.out.printf("executor JVMs %s (driver %d) checked, %.1f s with the cluster's start%n", pids, driverPid,
                    (System.nanoTime() - t0) / 1e9);
            long t1 = System.nanoTime();

            List<DataSet> train = SparkMlaTraining.runningMean(16, 16, 11);
            DataSet test = DataSet.merge(SparkMlaTraining.runningMean(4, 16, 12));
            double initial = SparkMlaTraining.initialLoss(SparkMlaTraining.network(42), test);
            double loss = SparkMlaTraining.fitOnSpark(sc, SparkMlaTraining.network(42), train, 2, 16, 2,
                    RDDTrainingApproach.Direct).score(test);
            System.out.printf("executor JVMs trained: loss %.4f -> %.4f, %.1f s%n", initial, loss, (System.nanoTime() - t1) / 1e9);
            assertTrue(loss < 0.5 * initial, "training on executor JVMs did not lower the loss: " + initial + " -> " + loss);
        }
    }

    /**
     * Runs in an executor JVM: "pid refused-or-not installed-or-not outputs-equal-size values".
     * The eager op comes first, before the network has installed anything in this JVM.
     */
    private static String onExecutor(byte[] model, INDArray x) throws IOException {
        String refused;
        if (Mla4j.isInstalled()) {
            refused = "already-installed";
        } else {
            try {
                Nd4j.exec(new TopK(Nd4j.rand(DataType.FLOAT, 1, 8), 2));
                refused = "uninstalled-op-ran";
            } catch (IllegalStateException e) {
                refused = e.getMessage().contains("Mla4j.install()") ? "uninstalled-op-refused" : "unclear:" + e.getMessage();
            }
        }
        MultiLayerNetwork net = ModelSerializer.restoreMultiLayerNetwork(new ByteArrayInputStream(model), false);
        String installed = Mla4j.isInstalled() ? "installed-by-layer" : "not-installed";
        INDArray out = net.output(x);
        StringBuilder values = new StringBuilder();
        for (double v : out.dup().data().asDouble()) values.append(values.length() == 0 ? "" : ",").append(v);
        return ProcessHandle.current().pid() + " " + refused + " " + installed + " " + out.length() + " " + values;
    }
}
