// One WebSocket to a gate: frames in and out, requests matched to their answers by seq_id.
// It knows nothing about sessions; the Client decides what to send and what a close means.
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { ErrorSchema } from "./gen/longlink_pb.js";
import { Cmd, FrameType, decodeFrame, encodeFrame, FrameError, type Frame } from "./frame.js";
import { LonglinkError, closedError, timeoutError } from "./errors.js";
import type { WebSocketConstructor } from "./types.js";

interface Pending {
  cmd: number;
  resolve: (frame: Frame) => void;
  reject: (error: LonglinkError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export interface ConnectionHandlers {
  /** A push (type 2), or an ERROR answering a request nobody waits for (e.g. a type-3 MSG_ACK). */
  onPush(frame: Frame): void;
  /** Called once, whoever closed. `error` says why when it was not our own close(). */
  onClose(error: LonglinkError): void;
}

export class Connection {
  private readonly pending = new Map<number, Pending>();
  private nextSeq = 0;
  private closed = false;
  private handlers: ConnectionHandlers | undefined;
  /** Pushes held back until the Client knows who it is (a MSG may precede the LOGIN answer, §6.1). */
  private held: Frame[] | undefined = [];
  /** Date.now() of the last frame received: the keepalive's dead-link check. */
  lastReceivedMs = Date.now();

  private constructor(private readonly ws: WebSocket) {}

  /** Opens the socket; rejects with NETWORK, or TIMEOUT after timeoutMs. */
  static open(url: string, WS: WebSocketConstructor, timeoutMs: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let ws: WebSocket;
      try {
        ws = new WS(url);
      } catch (err) {
        reject(new LonglinkError("NETWORK", `cannot open ${url}: ${String(err)}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      const conn = new Connection(ws);
      const timer = setTimeout(() => {
        fail(timeoutError(`the WebSocket upgrade of ${url}`));
      }, timeoutMs);
      const fail = (error: LonglinkError): void => {
        clearTimeout(timer);
        ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
        try {
          ws.close();
        } catch {
          /* already closing */
        }
        reject(error);
      };
      ws.onerror = () => fail(new LonglinkError("NETWORK", `cannot connect to ${url}`));
      ws.onclose = (ev) => fail(new LonglinkError("NETWORK", `${url} closed the connection (${ev.code})`));
      ws.onopen = () => {
        clearTimeout(timer);
        conn.attach();
        resolve(conn);
      };
    });
  }

  private attach(): void {
    this.ws.onmessage = (ev: MessageEvent) => this.receive(ev.data);
    this.ws.onerror = () => {
      /* the close event follows and says the rest */
    };
    this.ws.onclose = (ev: CloseEvent) => {
      const reason = ev.reason ? `: ${ev.reason}` : "";
      this.shutdown(new LonglinkError("NETWORK", `connection closed (${ev.code}${reason})`));
    };
  }

  setHandlers(handlers: ConnectionHandlers): void {
    this.handlers = handlers;
  }

  /** Starts handing pushes to onPush, the held ones first. */
  releasePushes(): void {
    const held = this.held;
    this.held = undefined;
    for (const frame of held ?? []) {
      if (this.closed) return;
      this.handlers?.onPush(frame);
    }
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  private receive(data: unknown): void {
    if (this.closed) return;
    let bytes: Uint8Array;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      this.close(new LonglinkError("PROTOCOL", "the server sent a text WebSocket message"));
      return;
    }
    let frame: Frame;
    try {
      frame = decodeFrame(bytes);
    } catch (err) {
      this.close(new LonglinkError("PROTOCOL", err instanceof FrameError ? err.message : String(err)));
      return;
    }
    this.lastReceivedMs = Date.now();
    if (frame.flags !== 0) {
      // This SDK offers no compression at LOGIN, so a flagged frame is a server bug.
      this.close(new LonglinkError("PROTOCOL", `unexpected frame flags ${frame.flags}`));
      return;
    }
    if (frame.type === FrameType.Response) {
      const waiting = this.pending.get(frame.seq);
      if (waiting !== undefined && (frame.cmd === waiting.cmd || frame.cmd === Cmd.ERROR)) {
        this.pending.delete(frame.seq);
        clearTimeout(waiting.timer);
        if (frame.cmd === Cmd.ERROR) waiting.reject(this.errorOf(frame));
        else waiting.resolve(frame);
        return;
      }
      // An ERROR about a type-3 ack, or a late answer: not tied to a waiting request.
      if (frame.cmd === Cmd.ERROR) this.dispatchPush(frame);
      return;
    }
    if (frame.type === FrameType.Push) this.dispatchPush(frame);
    // Types 0 and 3 never come from a v1 server: ignored (§1 compatibility rules).
  }

  private dispatchPush(frame: Frame): void {
    if (this.held !== undefined) this.held.push(frame);
    else this.handlers?.onPush(frame);
  }

  errorOf(frame: Frame): LonglinkError {
    try {
      return LonglinkError.fromBody(fromBinary(ErrorSchema, frame.body), frame.logId);
    } catch {
      return new LonglinkError("PROTOCOL", "undecodable ERROR body", { logId: frame.logId });
    }
  }

  private seq(): number {
    // A wrapping u32 counter that skips 0 (protocol §2: seq_id 0 is for pushes).
    this.nextSeq = (this.nextSeq + 1) >>> 0;
    if (this.nextSeq === 0) this.nextSeq = 1;
    return this.nextSeq;
  }

  /** Sends a type-0 request; resolves with its response frame, rejects with its ERROR. */
  request(cmd: number, body: Uint8Array, timeoutMs: number): Promise<Frame> {
    if (this.closed) return Promise.reject(closedError("the connection is closed"));
    const seq = this.seq();
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(timeoutError(`cmd ${cmd}`));
      }, Math.max(0, timeoutMs));
      this.pending.set(seq, { cmd, resolve, reject, timer });
      this.write(encodeFrame({ logId: 0n, seq, cmd, type: FrameType.Request, body }));
    });
  }

  /** Decodes the answer of request() with the response schema. */
  async call<S extends DescMessage>(cmd: number, body: Uint8Array, schema: S, timeoutMs: number): Promise<MessageShape<S>> {
    const frame = await this.request(cmd, body, timeoutMs);
    try {
      return fromBinary(schema, frame.body);
    } catch {
      throw new LonglinkError("PROTOCOL", `undecodable answer to cmd ${cmd}`, { logId: frame.logId });
    }
  }

  /** A fire-and-forget type-3 frame (MSG_ACK). */
  sendAck(cmd: number, body: Uint8Array): void {
    if (this.closed) return;
    this.write(encodeFrame({ logId: 0n, seq: this.seq(), cmd, type: FrameType.Ack, body }));
  }

  private write(bytes: Uint8Array): void {
    try {
      this.ws.send(bytes);
    } catch (err) {
      this.close(new LonglinkError("NETWORK", `send failed: ${String(err)}`));
    }
  }

  /** Ends the connection from our side; onClose runs with `error`. */
  close(error: LonglinkError = closedError("closed by the client")): void {
    if (this.closed) return;
    try {
      // A socket that can be torn down at once (the `ws` package's terminate()) is: a close
      // handshake over a dead link never completes, and in Node the socket would outlive us.
      const terminate = (this.ws as { terminate?: () => void }).terminate;
      if (typeof terminate === "function") terminate.call(this.ws);
      else this.ws.close(1000);
    } catch {
      /* already closing */
    }
    this.shutdown(error);
  }

  private shutdown(error: LonglinkError): void {
    if (this.closed) return;
    this.closed = true;
    this.ws.onmessage = this.ws.onclose = this.ws.onerror = this.ws.onopen = null;
    this.held = undefined;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      // CLOSED: we closed it (the client is ending); NETWORK: the link broke (a request may be
      // sent again on the next connection).
      p.reject(
        error.code === "CLOSED"
          ? error
          : new LonglinkError("NETWORK", `connection lost before the answer (${error.message})`, { logId: error.logId }),
      );
    }
    this.handlers?.onClose(error);
  }
}
