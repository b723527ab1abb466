package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.protobuf.Descriptors.MethodDescriptor;
import com.google.protobuf.Descriptors.ServiceDescriptor;
import io.grpc.MethodDescriptor.MethodType;
import com.google.protobuf.Message;
import io.grpc.MethodDescriptor.PrototypeMarshaller;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;
import jobwire.v1.Jobwire;
import org.junit.jupiter.api.Test;

/** Holds the hand-written method table (Rpc) to the generated service descriptors. */
class RpcTableTest {
  @Test
  void everyRpcOfTheContractIsInTheTableWithItsKindAndTypes() {
    Map<String, String> contract = new TreeMap<>();
    for (ServiceDescriptor service : Jobwire.getDescriptor().getServices()) {
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
