// The public data types of the SDK (API.md / README.md). 64-bit ids are bigint, times in ms
// are number.
import type { LonglinkError } from "./errors.js";

export interface UserRef {
  appcode: number;
  uid: string;
}

/** What a message holds (protocol §9). "unknown" keeps whatever this SDK cannot interpret. */
export type Content =
  | { type: "text"; text: string }
  | { type: "rich"; markup: string }
  | { type: "business"; msgtype: number; bytes: Uint8Array }
  | { type: "unknown"; contentType: number; msgtype: number; bytes: Uint8Array };

export interface Message {
  msgid: bigint;
  from: UserRef;
  to: UserRef;
  kind: "c2c" | "s2c";
  content: Content;
  senddateMs: number;
  clientMsgId: string;
  fromDevice: string;
  logId: bigint;
  prevMsgid: bigint;
  /** HISTORY_PULL / CONVERSATIONS: at least one device of the receiver acknowledged it. */
  delivered: boolean;
}

export interface SendReceipt {
  msgid: bigint;
  senddateMs: number;
  duplicate: boolean;
  clientMsgId: string;
}

export interface Page {
  messages: Message[];
  nextCursor: bigint;
  more: boolean;
}

export interface Conversation {
  with: UserRef;
  last: Message | undefined;
  unread: number;
  readUpto: bigint;
  peerReadUpto: bigint;
}

export interface Receipt {
  kind: "delivered" | "read";
  by: UserRef;
  byDevice: string;
  msgids: bigint[];
  readUpto: bigint;
}

export type State = "connecting" | "connected" | "reconnecting" | "closed";

export interface StateDetail {
  resumed?: boolean;
  error?: LonglinkError;
}

export interface Typing {
  from: UserRef;
  fromDevice: string;
}

export interface Kicked {
  reason: string;
  message: string;
  byDeviceId: string;
}

/** The constructor a client needs: the standard WebSocket (browser, Node >= 22, undici…). */
export type WebSocketConstructor = new (url: string | URL, protocols?: string | string[]) => WebSocket;

export interface ClientOptions {
  /** "ws://127.0.0.1:7701" or "wss://…". */
  url: string;
  appcode: number;
  /** A function is asked again for every fresh LOGIN (not for a RESUME). */
  token: string | (() => string | Promise<string>);
  deviceId: string;
  /** Default "web". */
  deviceClass?: string;
  clientVersion?: string;
  /** Default 10 000: every request promise settles by then (send and c2s: 3 × this). */
  requestTimeoutMs?: number;
  /** Default on, 500 ms … 15 s, jittered; the server's advice wins. */
  reconnect?: { enabled?: boolean; minMs?: number; maxMs?: number };
  /** When the runtime has no global WebSocket. */
  WebSocket?: WebSocketConstructor;
  /**
   * Default true: the SDK sends MSG_ACK for every message to this user once the `message`
   * listeners ran (and for the messages of a pullOffline page). false: nothing is acknowledged
   * until you call `ack()` — unacknowledged messages come back at the next login.
   */
  autoAck?: boolean;
  /**
   * Default 65 536, the gate's default `max_body_bytes`: a request whose body is larger is
   * refused here with BODY_TOO_LARGE, without sending it (the gate would close the connection
   * on it, and a resend after the reconnect would meet the same fate).
   */
  maxBodyBytes?: number;
}

/** One offline push token of this device (registerPushToken, pushTokens). */
export interface PushTokenInfo {
  /** "apns", "fcm" or a vendor channel's name. */
  provider: string;
  token: string;
}

/** The device class sent with a push token; the server picks the provider that delivers best per class. */
export interface PushDeviceClass {
  /** Default "web". */
  platform?: string;
  vendor?: string;
  appVersion?: string;
}
