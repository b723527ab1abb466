/**
 * How a client or worker reaches jobwire: address, TLS (`tls`, or raw `credentials`), channel
 * options, the bearer token of a server with `--auth-tokens`, and per-call metadata. Both
 * `Client` and `Worker` take these options.
 */
import { readFileSync } from "node:fs";

import { ChannelCredentials, Metadata, type ChannelOptions } from "@grpc/grpc-js";

import { QueueServiceClient, SessionServiceClient } from "./gen/jobwire/v1/jobwire";
import { ScheduleServiceClient } from "./gen/jobwire/v1/schedules";

/** Used when neither `address` nor `JOBWIRE_ADDR` is set. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";

export interface ConnectionOptions {
  /**
   * `host:port` of a jobwire server (or any gRPC target grpc-js understands, e.g.
   * `dns:///jobwire.internal:50051`). Default: `$JOBWIRE_ADDR`, else `127.0.0.1:50051`.
   */
  address?: string;
  /**
   * Reach a TLS server (`jobwire serve --tls-cert`): the CA to trust, a client certificate for
   * mutual TLS, a server name override. The files are read when the client or worker is made.
   */
  tls?: TlsOptions;
  /**
   * Raw channel credentials, the alternative to `tls` (not both). Default: plaintext
   * (`credentials.createInsecure()`).
   */
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

/** TLS to a jobwire server; every field is optional. */
export interface TlsOptions {
  /** PEM CA certificates to trust for the server's certificate. Default: Node's root store. */
  caFile?: string;
  /** A PEM client certificate chain, for a server that requires one (`--tls-client-ca`); with `keyFile`. */
  certFile?: string;
  /** The private key (PEM) of `certFile`. */
  keyFile?: string;
  /**
   * Check the server's certificate against this name instead of the address's host (e.g. when
   * connecting by IP address to a server whose certificate names its DNS name).
   */
  serverName?: string;
}

/** The credentials and the TLS channel options of `opts`. */
function security(opts: ConnectionOptions): { credentials: ChannelCredentials; options: ChannelOptions } {
  const tls = opts.tls;
  if (tls === undefined) return { credentials: opts.credentials ?? ChannelCredentials.createInsecure(), options: {} };
  if (opts.credentials !== undefined) throw new Error("tls: give either tls or credentials, not both");
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new Error("tls: give certFile and keyFile together (a client certificate and its key)");
  }
  const read = (path: string | undefined): Buffer | null => (path === undefined ? null : readFileSync(path));
  const credentials = ChannelCredentials.createSsl(read(tls.caFile), read(tls.keyFile), read(tls.certFile));
  const options: ChannelOptions =
    tls.serverName === undefined
      ? {}
      : { "grpc.ssl_target_name_override": tls.serverName, "grpc.default_authority": tls.serverName };
  return { credentials, options };
}

export function resolveAddress(opts: ConnectionOptions): string {
  return opts.address ?? process.env["JOBWIRE_ADDR"] ?? DEFAULT_ADDRESS;
}

/** Creates the generated grpc-js client for `jobwire.v1.QueueService`. */
export function createRawClient(opts: ConnectionOptions, defaults: ChannelOptions = {}): QueueServiceClient {
  const { credentials, options } = security(opts);
  return new QueueServiceClient(resolveAddress(opts), credentials, {
    ...defaults,
    ...options,
    ...(opts.channelOptions ?? {}),
  });
}

/** The generated client for `jobwire.v1.SessionService`, on the channel of `queues`. */
export function createSessionsClient(queues: QueueServiceClient): SessionServiceClient {
  // With channelOverride the address and credentials are those of the channel given.
  return new SessionServiceClient("unused", ChannelCredentials.createInsecure(), { channelOverride: queues.getChannel() });
}

/** The generated client for `jobwire.v1.ScheduleService`, on the channel of `queues`. */
export function createSchedulesClient(queues: QueueServiceClient): ScheduleServiceClient {
  return new ScheduleServiceClient("unused", ChannelCredentials.createInsecure(), { channelOverride: queues.getChannel() });
}

export function buildMetadata(opts: ConnectionOptions): Metadata {
  const md = new Metadata();
  const token = opts.token ?? process.env["JOBWIRE_TOKEN"];
  if (token) md.set("authorization", `Bearer ${token}`);
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  return md;
}
