package org.mla4j.nativelib.presets;

import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.Properties;
import org.bytedeco.javacpp.tools.Info;
import org.bytedeco.javacpp.tools.InfoMap;
import org.bytedeco.javacpp.tools.InfoMapper;

/**
 * JavaCPP description of the C ABI in {@code op-native/include/mla/mla.h}. The build parses the
 * header into {@code org.mla4j.nativelib.MlaLib}: one Java class per params struct, one static
 * method per entry point.
 */
@Properties(
        target = "org.mla4j.nativelib.MlaLib",
        value = @Platform(include = "mla/mla.h", link = "mla4j"))
public class MlaConfig implements InfoMapper {
    @Override
    public void map(InfoMap infoMap) {
        infoMap.put(new Info("MLA_MLA_H").cppTypes().annotations());
    }
}
