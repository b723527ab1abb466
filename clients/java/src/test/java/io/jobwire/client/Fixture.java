package io.jobwire.client;

import java.nio.charset.StandardCharsets;
import java.util.UUID;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** One Redis and one jobwire server per test class; tests keep apart by their own queues. */
abstract class Fixture {
  static Stack stack;
  static JobwireClient client;

  @BeforeAll
  static void startStack() {
    stack = Stack.start();
    client = stack.client();
  }

  @AfterAll
  static void stopStack() {
    client.close();
    stack.close();
  }

  /** A queue name no other test uses. */
  static String queue(String label) {
    return label + "-" + UUID.randomUUID().toString().substring(0, 8);
  }

  static byte[] utf8(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  static String text(byte[] b) {
    return new String(b, StandardCharsets.UTF_8);
  }
}
