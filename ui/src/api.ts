// The dashboard's one way to the server: the public gRPC API over gRPC-web, on the origin that
// served the page. Every call carries the token the operator typed (kept in sessionStorage for
// this tab only, never in a URL) as `authorization: Bearer`; the assets themselves need none.

import { createClient, ConnectError, Code, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AccessRole, QueueService, SessionService } from "./gen/jobwire/v1/jobwire_pb";
import { ScheduleService } from "./gen/jobwire/v1/schedules_pb";

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
export const schedules = createClient(ScheduleService, transport);

let admin = false;

/**
 * Whether the current token may act (retry, cancel, delete, pause), as GetAccess last said: an
 * admin token, or a server without tokens. The page offers actions only then; the server checks
 * every call on its own either way.
 */
export function mayAct(): boolean {
  return admin;
}

/** Asks the server what the current token may do (at start and whenever the token changes). */
export async function refreshAccess(): Promise<void> {
  try {
    admin = (await queues.getAccess({})).role === AccessRole.ADMIN;
  } catch {
    admin = false;
  }
}

/**
 * The field an INVALID_ARGUMENT names, as the server writes it at the start of its message
 * (`settings.max_waiting: must be from 1 to ...`); undefined for any other error.
 */
export function invalidField(error: unknown): { field: string; reason: string } | undefined {
  if (!(error instanceof ConnectError) || error.code !== Code.InvalidArgument) return undefined;
  const split = error.rawMessage.indexOf(": ");
  if (split <= 0) return undefined;
  return { field: error.rawMessage.slice(0, split), reason: error.rawMessage.slice(split + 2) };
}

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
