// Typed content ↔ the wire's (content_type, msgtype, bytes) triple (protocol §9), and the
// conversion of wire messages into the public Message type.
import { ContentType, MsgKind, type Msg, type UserRef as WireUserRef } from "./gen/longlink_pb.js";
import type { Content, Message, UserRef } from "./types.js";

const encoder = new TextEncoder();
// fatal: invalid UTF-8 in a TEXT/RICH message makes it "unknown" instead of showing U+FFFD.
const decoder = new TextDecoder("utf-8", { fatal: true });

export interface ContentParts {
  contentType: number;
  msgtype: number;
  bytes: Uint8Array;
}

export function contentToParts(content: Content): ContentParts {
  switch (content.type) {
    case "text":
      return { contentType: ContentType.TEXT, msgtype: 0, bytes: encoder.encode(content.text) };
    case "rich":
      return { contentType: ContentType.RICH, msgtype: 0, bytes: encoder.encode(content.markup) };
    case "business":
      return { contentType: ContentType.BUSINESS, msgtype: content.msgtype, bytes: content.bytes };
    case "unknown":
      return { contentType: content.contentType, msgtype: content.msgtype, bytes: content.bytes };
  }
}

/**
 * A content type this SDK does not know, or a known one whose bytes do not fit it (TEXT/RICH
 * with msgtype ≠ 0 or invalid UTF-8), is not an error: it becomes { type: "unknown" } and is
 * still deduplicated and acknowledged like any message (§9).
 */
export function contentFromParts(parts: ContentParts): Content {
  const unknown: Content = { type: "unknown", contentType: parts.contentType, msgtype: parts.msgtype, bytes: parts.bytes };
  switch (parts.contentType) {
    case ContentType.TEXT:
    case ContentType.RICH: {
      if (parts.msgtype !== 0) return unknown;
      let text: string;
      try {
        text = decoder.decode(parts.bytes);
      } catch {
        return unknown;
      }
      return parts.contentType === ContentType.TEXT ? { type: "text", text } : { type: "rich", markup: text };
    }
    case ContentType.BUSINESS:
      return { type: "business", msgtype: parts.msgtype, bytes: parts.bytes };
    default:
      return unknown;
  }
}

export function userFromWire(user: WireUserRef | undefined): UserRef {
  return { appcode: user?.appcode ?? 0, uid: user?.uid ?? "" };
}

export function messageFromWire(msg: Msg): Message {
  return {
    msgid: msg.msgid,
    from: userFromWire(msg.from),
    to: userFromWire(msg.to),
    kind: msg.kind === MsgKind.S2C ? "s2c" : "c2c",
    content: contentFromParts({ contentType: msg.contentType, msgtype: msg.msgtype, bytes: msg.content }),
    senddateMs: Number(msg.senddateMs),
    clientMsgId: msg.clientMsgId,
    fromDevice: msg.fromDevice,
    logId: msg.logId,
    prevMsgid: msg.prevMsgid,
    delivered: msg.delivered,
  };
}
