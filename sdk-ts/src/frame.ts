// The 24-byte frame header of docs/protocol.md §2, big-endian, followed by a protobuf body.
// Over WebSocket every binary message carries exactly one whole frame (§1.1), so no stream
// reassembly is needed here: one message in, one frame out.

export const HEADER_LEN = 24;
const MAGIC_0 = 0x4c; // "L"
const MAGIC_1 = 0x4c; // "L"
const VERSION = 1;

/** Header `type` byte (§3). */
export const FrameType = {
  Request: 0,
  Response: 1,
  Push: 2,
  Ack: 3,
} as const;

/** Command ids (§4). */
export const Cmd = {
  LOGIN: 1,
  LOGOUT: 2,
  KEEPALIVE: 3,
  RESUME: 4,
  KICK: 5,
  C2S: 16,
  C2C: 17,
  MSG: 18,
  MSG_ACK: 19,
  OFFLINE_PULL: 20,
  HISTORY_PULL: 21,
  RECEIPT: 22,
  CONVERSATIONS: 23,
  MARK_READ: 24,
  PUSH_TOKEN: 25,
  NOTIFICATION_ACK: 26,
  ERROR: 255,
} as const;

export interface Frame {
  flags: number;
  logId: bigint;
  seq: number;
  cmd: number;
  type: number;
  body: Uint8Array;
}

export function encodeFrame(frame: Omit<Frame, "flags"> & { flags?: number }): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + frame.body.length);
  const view = new DataView(out.buffer);
  out[0] = MAGIC_0;
  out[1] = MAGIC_1;
  out[2] = VERSION;
  out[3] = frame.flags ?? 0;
  view.setBigUint64(4, frame.logId);
  view.setUint32(12, frame.seq);
  view.setUint16(16, frame.cmd);
  out[18] = frame.type;
  out[19] = 0;
  view.setUint32(20, frame.body.length);
  out.set(frame.body, HEADER_LEN);
  return out;
}

/** Thrown for bytes that are not one valid frame; the connection is unusable after it. */
export class FrameError extends Error {}

export function decodeFrame(bytes: Uint8Array): Frame {
  if (bytes.length < HEADER_LEN) throw new FrameError(`frame of ${bytes.length} bytes is shorter than the header`);
  if (bytes[0] !== MAGIC_0 || bytes[1] !== MAGIC_1) throw new FrameError("bad magic");
  if (bytes[2] !== VERSION) throw new FrameError(`unsupported version ${String(bytes[2])}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bodyLen = view.getUint32(20);
  if (bodyLen !== bytes.length - HEADER_LEN) {
    throw new FrameError(`body_len ${bodyLen} but the message holds ${bytes.length - HEADER_LEN} body bytes`);
  }
  return {
    flags: bytes[3] ?? 0,
    logId: view.getBigUint64(4),
    seq: view.getUint32(12),
    cmd: view.getUint16(16),
    type: bytes[18] ?? 0,
    body: bytes.subarray(HEADER_LEN),
  };
}
