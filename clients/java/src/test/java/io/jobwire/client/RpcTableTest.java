package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Descriptors.FileDescriptor;
import com.google.protobuf.Descriptors.MethodDescriptor;
import com.google.protobuf.Descriptors.ServiceDescriptor;
import io.grpc.MethodDescriptor.MethodType;
import com.google.protobuf.Message;
import io.grpc.MethodDescriptor.PrototypeMarshaller;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Holds the hand-written method table (Rpc) to the generated service descriptors of every proto
 * file under {@code proto/jobwire/v1} (each file's outer class found by protoc's naming rule, so
 * a new file is covered without a change here).
 */
class RpcTableTest {
  private static final Path PROTO_DIR = Path.of("..", "..", "proto", "jobwire", "v1");

  @Test
  void everyRpcOfTheContractIsInTheTableWithItsKindAndTypes() throws Exception {
    Map<String, String> contract = new TreeMap<>();
    List<FileDescriptor> files = protoFiles();
    assertTrue(files.size() >= 2, "the proto files found: " + files);
    for (FileDescriptor file : files) {
      for (ServiceDescriptor service : file.getServices()) {
        for (MethodDescriptor m : service.getMethods()) {
          contract.put(
              service.getFullName() + "/" + m.getName(),
              kind(m.isClientStreaming(), m.isServerStreaming())
                  + " "
                  + m.getInputType().getFullName()
                  + " -> "
                  + m.getOutputType().getFullName());
        }
      }
    }
    Map<String, String> table =
        Rpc.ALL.stream()
            .collect(
                Collectors.toMap(
                    io.grpc.MethodDescriptor::getFullMethodName,
                    RpcTableTest::describe,
                    (a, b) -> a + " (twice)",
                    TreeMap::new));
    assertEquals(contract, table);
  }

  /** The descriptor of each .proto file of the contract, from its generated outer class. */
  private static List<FileDescriptor> protoFiles() throws Exception {
    List<FileDescriptor> out = new ArrayList<>();
    try (Stream<Path> paths = Files.list(PROTO_DIR)) {
      for (Path path : paths.filter(p -> p.toString().endsWith(".proto")).sorted().toList()) {
        String stem = path.getFileName().toString().replaceFirst("\\.proto$", "");
        Class<?> outer = Class.forName("jobwire.v1." + outerClassName(stem));
        out.add((FileDescriptor) outer.getMethod("getDescriptor").invoke(null));
      }
    }
    return out;
  }

  /** protoc's outer class name of a file: its name in CamelCase ({@code job_types} -> JobTypes). */
  private static String outerClassName(String stem) {
    StringBuilder name = new StringBuilder();
    boolean upper = true;
    for (char c : stem.toCharArray()) {
      if (c == '_' || c == '-') {
        upper = true;
      } else {
        name.append(upper ? Character.toUpperCase(c) : c);
        upper = Character.isDigit(c);
      }
    }
    return name.toString();
  }

  private static String describe(io.grpc.MethodDescriptor<?, ?> m) {
    MethodType t = m.getType();
    return kind(
            t == MethodType.CLIENT_STREAMING || t == MethodType.BIDI_STREAMING,
            t == MethodType.SERVER_STREAMING || t == MethodType.BIDI_STREAMING)
        + " "
        + messageName(m.getRequestMarshaller())
        + " -> "
        + messageName(m.getResponseMarshaller());
  }

  private static String messageName(io.grpc.MethodDescriptor.Marshaller<?> marshaller) {
    Object prototype = ((PrototypeMarshaller<?>) marshaller).getMessagePrototype();
    return ((Message) prototype).getDescriptorForType().getFullName();
  }

  private static String kind(boolean clientStreaming, boolean serverStreaming) {
    if (clientStreaming && serverStreaming) {
      return "bidi";
    }
    if (clientStreaming) {
      return "client-streaming";
    }
    return serverStreaming ? "server-streaming" : "unary";
  }
}
