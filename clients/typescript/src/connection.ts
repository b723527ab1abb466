/**
 * How a client or worker reaches jobwire: address, TLS credentials, channel options, the bearer
 * token of a server with `--auth-tokens`, and per-call metadata. Both `Client` and `Worker` take
 * these options.
 */
import { ChannelCredentials, Metadata, type ChannelOptions } from "@grpc/grpc-js";

import { QueueServiceClient } from "./gen/jobwire/v1/jobwire";

/** Used when neither `address` nor `JOBWIRE_ADDR` is set. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";

export interface ConnectionOptions {
  /**
   * `host:port` of a jobwire server (or any gRPC target grpc-js understands, e.g.
   * `dns:///jobwire.internal:50051`). Default: `$JOBWIRE_ADDR`, else `127.0.0.1:50051`.
   */
  address?: string;
  /** Channel credentials. Default: plaintext (`credentials.createInsecure()`). */
  credentials?: ChannelCredentials;
  /** Extra grpc-js channel options (keepalive, message sizes...). */
  channelOptions?: ChannelOptions;
  /**
   * The bearer token of a server started with `--auth-tokens` (made with `jobwire token
   * create`), sent with every call as `authorization: Bearer <token>`. Default:
   * `$JOBWIRE_TOKEN`, else none (`""` sends none). A worker needs a token of role `worker`.
   */
  token?: string;
  /** Metadata sent with every call. An `authorization` here wins over `token`. */
  metadata?: Record<string, string>;
}

export function resolveAddress(opts: ConnectionOptions): string {
  return opts.address ?? process.env["JOBWIRE_ADDR"] ?? DEFAULT_ADDRESS;
}

/** Creates the generated grpc-js client for `jobwire.v1.QueueService`. */
export function createRawClient(opts: ConnectionOptions, defaults: ChannelOptions = {}): QueueServiceClient {
  return new QueueServiceClient(
    resolveAddress(opts),
    opts.credentials ?? ChannelCredentials.createInsecure(),
    { ...defaults, ...(opts.channelOptions ?? {}) },
  );
}

export function buildMetadata(opts: ConnectionOptions): Metadata {
  const md = new Metadata();
  const token = opts.token ?? process.env["JOBWIRE_TOKEN"];
  if (token) md.set("authorization", `Bearer ${token}`);
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  return md;
}
