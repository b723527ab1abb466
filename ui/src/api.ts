// The dashboard's one way to the server: the public gRPC API over gRPC-web, on the origin that
// served the page. Every call carries the token the operator typed (kept in sessionStorage for
// this tab only, never in a URL) as `authorization: Bearer`; the assets themselves need none.

import { createClient, ConnectError, Code, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { QueueService, SessionService } from "./gen/jobwire/v1/jobwire_pb";

const TOKEN_KEY = "jobwire.token";

export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value: string): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const queues = createClient(QueueService, transport);
export const sessions = createClient(SessionService, transport);

/** An error as one line: the gRPC code's name and the server's message. */
export function describe(error: unknown): string {
  if (error instanceof ConnectError) return `${Code[error.code]}: ${error.rawMessage}`;
  if (error instanceof Error) return error.message;
  return String(error);
}

export function isCode(error: unknown, code: Code): boolean {
  return error instanceof ConnectError && error.code === code;
}

export { Code };
