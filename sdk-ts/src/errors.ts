import { ErrorCode, type Error as ErrorBody } from "./gen/longlink_pb.js";

/**
 * Every failure the SDK reports. `code` is an ErrorCode name of proto/longlink.proto
 * ("BAD_TOKEN", "STORE_UNAVAILABLE", …), "ERROR_<n>" for a code this SDK does not know, or one
 * of the SDK's own: "TIMEOUT" (no answer in time), "CLOSED" (the client was closed, or the
 * connection ended while the request was out and it cannot be retried), "NETWORK" (the socket
 * could not be opened or broke), "PROTOCOL" (the server sent something this SDK cannot read).
 */
export class LonglinkError extends Error {
  readonly code: string;
  readonly retryAfterMs: number;
  readonly logId: bigint;

  constructor(code: string, message: string, options: { retryAfterMs?: number; logId?: bigint } = {}) {
    super(message ? `${code}: ${message}` : code);
    this.name = "LonglinkError";
    this.code = code;
    this.retryAfterMs = options.retryAfterMs ?? 0;
    this.logId = options.logId ?? 0n;
  }

  /** From the body of an ERROR frame (cmd 255). */
  static fromBody(body: ErrorBody, logId: bigint): LonglinkError {
    return new LonglinkError(errorCodeName(body.code), body.message, {
      retryAfterMs: body.retryAfterMs,
      logId,
    });
  }
}

export function errorCodeName(code: number): string {
  // Enums are open (protocol §1 compatibility rules): keep unknown values as their number.
  const name = (ErrorCode as unknown as Record<number, string | undefined>)[code];
  return name ?? `ERROR_${code}`;
}

/** Codes after which reconnecting with the same credentials cannot help (§8 "retry: no"). */
export const FATAL_LOGIN_CODES: ReadonlySet<string> = new Set([
  "BAD_TOKEN",
  "UNKNOWN_APPCODE",
  "APPCODE_MISMATCH",
  "SESSION_REPLACED",
  "INVALID_ARGUMENT",
  "BAD_MAGIC",
  "UNSUPPORTED_VERSION",
  "BAD_FLAGS",
  "BAD_BODY",
  "BAD_FRAME_TYPE",
]);

export const timeoutError = (what: string): LonglinkError =>
  new LonglinkError("TIMEOUT", `no answer to ${what} in time`);
export const closedError = (why = "the client is closed"): LonglinkError => new LonglinkError("CLOSED", why);
