package org.mla4j.tests.readme;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * What a README Java block may assume: the project's usual imports, and a few variables a
 * snippet uses without declaring (the inputs a reader already has, e.g. the latent rows a decode
 * step appends). A block gets a variable of this fixture only when it uses the name and does not
 * declare it itself. A new README block that needs another input adds it here.
 */
final class ReadmeFixture {
    private ReadmeFixture() {}

    /** Imports every block gets (single-type imports win over the wildcards on a name clash). */
    static final List<String> IMPORTS = List.of(
            "java.io.File", "java.util.*",
            "org.mla4j.*", "org.mla4j.cache.*", "org.mla4j.ops.*", "org.mla4j.samediff.*", "org.mla4j.gpu.*",
            "org.mla4j.layers.*", "org.mla4j.layers.dl4j.*",
            "org.nd4j.autodiff.samediff.SDVariable", "org.nd4j.autodiff.samediff.SameDiff",
            "org.nd4j.autodiff.samediff.TrainingConfig",
            "org.nd4j.linalg.api.buffer.DataType", "org.nd4j.linalg.api.ndarray.INDArray",
            "org.nd4j.linalg.factory.Nd4j", "org.nd4j.linalg.dataset.DataSet",
            "org.nd4j.linalg.learning.config.Adam", "org.nd4j.linalg.learning.config.Sgd",
            "org.nd4j.linalg.activations.Activation", "org.nd4j.linalg.lossfunctions.LossFunctions",
            "org.deeplearning4j.nn.conf.MultiLayerConfiguration", "org.deeplearning4j.nn.conf.NeuralNetConfiguration",
            "org.deeplearning4j.nn.conf.ComputationGraphConfiguration",
            "org.deeplearning4j.nn.conf.inputs.InputType",
            "org.deeplearning4j.nn.conf.layers.RnnOutputLayer", "org.deeplearning4j.nn.conf.layers.DenseLayer",
            "org.deeplearning4j.nn.conf.layers.OutputLayer",
            "org.deeplearning4j.nn.multilayer.MultiLayerNetwork", "org.deeplearning4j.nn.graph.ComputationGraph",
            "org.deeplearning4j.util.ModelSerializer",
            "org.deeplearning4j.parallelism.ParallelWrapper", "org.deeplearning4j.parallelism.ParallelInference",
            "org.deeplearning4j.parallelism.inference.InferenceMode",
            "org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator");

    /** Variables by name: a declaration (statement) each. Shapes follow the README's text. */
    static final Map<String, String> VARIABLES = new LinkedHashMap<>();

    static {
        // decode: one new latent row per sequence ([b, 1, 576]) and absorbed queries [b, 1, h_q, 576]
        VARIABLES.put("latentRows", "INDArray latentRows = Nd4j.rand(DataType.FLOAT, 2, 1, 576);");
        VARIABLES.put("qAbsorbed", "INDArray qAbsorbed = Nd4j.rand(DataType.FLOAT, 2, 1, 16, 576).castTo(DataType.BFLOAT16);");
        VARIABLES.put("q", "INDArray q = Nd4j.rand(DataType.FLOAT, 2, 1, 16, 576).castTo(DataType.BFLOAT16);");
        VARIABLES.put("scale", "double scale = 1 / Math.sqrt(192);");
    }

    /** The fixture declarations a snippet needs: names it uses and does not declare. */
    static List<String> declarationsFor(String snippet) {
        List<String> out = new ArrayList<>();
        for (Map.Entry<String, String> e : VARIABLES.entrySet()) {
            String name = Pattern.quote(e.getKey());
            boolean used = Pattern.compile("(?<![\\w.])" + name + "(?!\\w)").matcher(snippet).find();
            // declared: a type (a capitalised or primitive name, maybe generic or an array) right before the name
            boolean declared = Pattern.compile("(?:\\b(?:[A-Z][\\w.]*(?:<[^;()]*>)?|int|long|double|float|boolean|var)"
                    + "(?:\\[\\])*)\\s+" + name + "\\s*(?:=|;|:|,|\\))").matcher(snippet).find();
            if (used && !declared) out.add(e.getValue());
        }
        return out;
    }
}
