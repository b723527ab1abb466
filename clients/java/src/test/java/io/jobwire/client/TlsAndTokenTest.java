package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerCredentials;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.TlsServerCredentials;
import io.grpc.stub.ServerCalls;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.charset.StandardCharsets;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.SSLSession;
import jobwire.v1.Jobwire.QueueStats;
import jobwire.v1.Jobwire.StatsResponse;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The token and TLS options. Most tests run the client against a small gRPC server of their own
 * that answers {@code Stats} and records what each call brought: its {@code authorization}
 * metadata, its authority, and the client certificate of its TLS session. One runs a job through
 * the real jobwire server with {@code --tls-cert} and {@code --auth-tokens}, a token file made by
 * {@code jobwire token create}. Certificates are made with the openssl command line for each
 * run: a CA, a server certificate for {@code jobwire.test}, and a client certificate.
 */
class TlsAndTokenTest {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private static Path dir;
  private static final ConcurrentLinkedQueue<String> seen = new ConcurrentLinkedQueue<>();

  @BeforeAll
  static void makeCertificates() throws Exception {
    dir = Files.createTempDirectory("jw-java-tls-");
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=jobwire test CA");
    for (String name : List.of("server", "client")) {
      String cn = name.equals("server") ? "jobwire.test" : "worker-7";
      openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
          "-subj", "/CN=" + cn);
      Files.writeString(dir.resolve(name + ".ext"),
          name.equals("server") ? "subjectAltName=DNS:jobwire.test\n" : "extendedKeyUsage=clientAuth\n");
      openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
          "-CAcreateserial", "-out", name + ".pem", "-days", "1", "-extfile", name + ".ext");
    }
  }

  @AfterAll
  static void removeCertificates() throws IOException {
    try (var files = Files.list(dir)) {
      for (Path p : files.toList()) {
        Files.delete(p);
      }
    }
    Files.delete(dir);
  }

  private static void openssl(String... args) throws Exception {
    List<String> cmd = new java.util.ArrayList<>(List.of("openssl"));
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes());
    assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "openssl " + args[0] + ": " + out);
  }

  /** A server answering Stats, recording "authority | authorization | client certificate". */
  private static Server recordingServer(ServerCredentials credentials) throws IOException {
    ServerServiceDefinition stats =
        ServerServiceDefinition.builder(Rpc.QUEUE)
            .addMethod(
                Rpc.STATS,
                ServerCalls.asyncUnaryCall(
                    (request, response) -> {
                      response.onNext(
                          StatsResponse.newBuilder()
                              .setStats(QueueStats.newBuilder().setQueue(request.getQueue()))
                              .build());
                      response.onCompleted();
                    }))
            .build();
    ServerInterceptor recorder =
        new ServerInterceptor() {
          @Override
          public <Q, R> ServerCall.Listener<Q> interceptCall(
              ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
            SSLSession tls = call.getAttributes().get(Grpc.TRANSPORT_ATTR_SSL_SESSION);
            String peer = "plaintext";
            if (tls != null) {
              try {
                peer = ((X509Certificate) tls.getPeerCertificates()[0]).getSubjectX500Principal().getName();
              } catch (javax.net.ssl.SSLPeerUnverifiedException e) {
                peer = "no client certificate";
              }
            }
            seen.add(call.getAuthority() + " | " + headers.get(AUTHORIZATION) + " | " + peer);
            return next.startCall(call, headers);
          }
        };
    return Grpc.newServerBuilderForPort(0, credentials)
        .addService(ServerInterceptors.intercept(stats, recorder))
        .build()
        .start();
  }

  private static ServerCredentials mutualTls() throws IOException {
    return TlsServerCredentials.newBuilder()
        .keyManager(dir.resolve("server.pem").toFile(), dir.resolve("server.key").toFile())
        .trustManager(dir.resolve("ca.pem").toFile())
        .clientAuth(TlsServerCredentials.ClientAuth.REQUIRE)
        .build();
  }

  @Test
  void theTokenTravelsAsBearerMetadataOnEveryCall() throws Exception {
    Server server = recordingServer(InsecureServerCredentials.create());
    seen.clear();
    try (JobwireClient client =
        JobwireClient.builder().target("127.0.0.1:" + server.getPort()).token("s3cret").build()) {
      Blocking.get(client.admin().stats("a"));
      Blocking.get(client.admin().stats("b"));
      assertEquals(
          List.of(
              "127.0.0.1:" + server.getPort() + " | Bearer s3cret | plaintext",
              "127.0.0.1:" + server.getPort() + " | Bearer s3cret | plaintext"),
          List.copyOf(seen));
    } finally {
      server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  @Test
  void mutualTlsWithACaFileAClientCertificateAndAServerNameOverride() throws Exception {
    Server server = recordingServer(mutualTls());
    seen.clear();
    try (JobwireClient client =
        JobwireClient.builder()
            .target("127.0.0.1:" + server.getPort())
            .caFile(dir.resolve("ca.pem"))
            .clientCertificate(dir.resolve("client.pem"), dir.resolve("client.key"))
            .serverNameOverride("jobwire.test")
            .token("s3cret")
            .build()) {
      assertEquals("q", Blocking.get(client.admin().stats("q")).getQueue());
      assertEquals(List.of("jobwire.test | Bearer s3cret | CN=worker-7"), List.copyOf(seen));
    } finally {
      server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  @Test
  void noClientCertificateOrTheWrongServerNameIsRefused() throws Exception {
    Server server = recordingServer(mutualTls());
    String target = "127.0.0.1:" + server.getPort();
    try (JobwireClient noCert =
            JobwireClient.builder().target(target).caFile(dir.resolve("ca.pem")).serverNameOverride("jobwire.test").build();
        JobwireClient wrongName =
            JobwireClient.builder()
                .target(target)
                .caFile(dir.resolve("ca.pem"))
                .clientCertificate(dir.resolve("client.pem"), dir.resolve("client.key"))
                .build()) {
      assertThrows(UnavailableException.class, () -> Blocking.get(noCert.admin().stats("q")));
      assertThrows(UnavailableException.class, () -> Blocking.get(wrongName.admin().stats("q")));
    } finally {
      server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** The secret {@code jobwire token create} prints (and only it, on stdout). */
  private static String createToken(Path file, String name, String role) throws Exception {
    Process p =
        new ProcessBuilder(
                Stack.binary(), "token", "create", "--file", file.toString(), "--name", name, "--role", role)
            .redirectError(ProcessBuilder.Redirect.DISCARD)
            .start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
    assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "jobwire token create " + name);
    return out;
  }

  @Test
  void aProducerAndAWorkerSendTheirTokensOverTlsToTheRealServer() throws Exception {
    Path tokens = dir.resolve("tokens.json");
    String producerToken = createToken(tokens, "java-producer", "producer");
    String workerToken = createToken(tokens, "java-worker", "worker");
    try (Stack stack =
        Stack.start(
            "--auth-tokens", tokens.toString(),
            "--tls-cert", dir.resolve("server.pem").toString(),
            "--tls-key", dir.resolve("server.key").toString())) {
      JobwireClient.Builder tls =
          JobwireClient.builder().target(stack.address()).caFile(dir.resolve("ca.pem")).serverNameOverride("jobwire.test");
      try (JobwireClient producer = tls.token(producerToken).build();
          JobwireClient workers = tls.token(workerToken).build();
          JobwireClient stranger = tls.token("jw_" + "0".repeat(64)).build();
          Worker worker =
              Worker.builder(workers)
                  .queues("java-tls")
                  .handle("greet", job -> ("hello " + job.text()).getBytes(StandardCharsets.UTF_8))
                  .build()
                  .start()) {
        byte[] result =
            Blocking.get(producer.run(NewJob.of("java-tls", "greet").payload("ada"), Duration.ofSeconds(20)));
        assertEquals("hello ada", new String(result, StandardCharsets.UTF_8));
        assertThrows(
            UnauthenticatedException.class, () -> Blocking.get(stranger.add(NewJob.of("java-tls", "greet"))));
      }
    }
  }
}
