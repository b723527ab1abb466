package io.jobwire.client;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;

/**
 * A TCP proxy on 127.0.0.1 in front of a jobwire server, to cut connections on purpose or to
 * send new connections elsewhere (as a load balancer would). Each connection is two threads
 * copying bytes; {@link #cutNextResponse()} swallows the next bytes the server sends and then
 * cuts every connection, so a request is processed but its answer is lost.
 */
final class Proxy implements AutoCloseable {
  private final ServerSocket listener;
  private final Supplier<String> target;
  private final Set<Socket> sockets = ConcurrentHashMap.newKeySet();
  private final AtomicBoolean cutArmed = new AtomicBoolean();
  private volatile boolean swallowing;

  Proxy(Supplier<String> target) throws IOException {
    this.target = target;
    this.listener = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
    Thread accept = new Thread(this::acceptLoop, "proxy-accept");
    accept.setDaemon(true);
    accept.start();
  }

  String address() {
    return "127.0.0.1:" + listener.getLocalPort();
  }

  private void acceptLoop() {
    while (!listener.isClosed()) {
      try {
        Socket client = listener.accept();
        String to = target.get();
        int colon = to.lastIndexOf(':');
        Socket upstream = new Socket(to.substring(0, colon), Integer.parseInt(to.substring(colon + 1)));
        sockets.add(client);
        sockets.add(upstream);
        pump(client, upstream, false);
        pump(upstream, client, true);
      } catch (IOException e) {
        // The listener closed, or the upstream refused: that connection just fails.
      }
    }
  }

  private void pump(Socket from, Socket to, boolean fromServer) {
    Thread t =
        new Thread(
            () -> {
              byte[] buf = new byte[16 * 1024];
              try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                for (int n = in.read(buf); n >= 0; n = in.read(buf)) {
                  if (fromServer && cutArmed.compareAndSet(true, false)) {
                    swallowing = true;
                    Thread cutter = new Thread(() -> { pause(150); cutAll(); swallowing = false; });
                    cutter.setDaemon(true);
                    cutter.start();
                  }
                  if (!(fromServer && swallowing)) {
                    out.write(buf, 0, n);
                  }
                }
              } catch (IOException e) {
                // Either side went away: close both.
              } finally {
                close(from);
                close(to);
              }
            },
            "proxy-pump");
    t.setDaemon(true);
    t.start();
  }

  private static void pause(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** The next bytes from the server are swallowed, then every connection is cut. */
  void cutNextResponse() {
    cutArmed.set(true);
  }

  /** Cuts every open connection. */
  void cutAll() {
    sockets.forEach(this::close);
  }

  private void close(Socket s) {
    sockets.remove(s);
    try {
      s.close();
    } catch (IOException e) {
      // Already closed.
    }
  }

  @Override
  public void close() throws IOException {
    listener.close();
    cutAll();
  }
}
