// @longlink/sdk: a longlink client for browsers and Node >= 20 over WebSocket.
// The public API is described in README.md.
export { Client } from "./client.js";
export { LonglinkError } from "./errors.js";
export { newClientMsgId, userKey, parseUserRef } from "./ids.js";
export type {
  ClientOptions,
  Content,
  Conversation,
  Kicked,
  Message,
  Page,
  PushDeviceClass,
  PushTokenInfo,
  Receipt,
  SendReceipt,
  State,
  StateDetail,
  Typing,
  UserRef,
  WebSocketConstructor,
} from "./types.js";
