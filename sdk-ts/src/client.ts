// The Client: one session over a sequence of connections. It logs in, keeps the link alive,
// reconnects (RESUME within the hold, else LOGIN with prior_epoch), hands every message to the
// app once and acknowledges it, and retries unanswered requests after a reconnect.
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  C2cRequestSchema,
  C2cResponseSchema,
  C2sRequestSchema,
  C2sResponseSchema,
  ContentType,
  ConversationsRequestSchema,
  ConversationsResponseSchema,
  HistoryDirection,
  HistoryPullRequestSchema,
  HistoryPullResponseSchema,
  KeepaliveRequestSchema,
  KeepaliveResponseSchema,
  KickReason,
  KickSchema,
  LoginRequestSchema,
  LoginResponseSchema,
  LogoutRequestSchema,
  LogoutResponseSchema,
  MarkReadRequestSchema,
  MarkReadResponseSchema,
  MsgAckSchema,
  MsgSchema,
  NotificationAckResponseSchema,
  NotificationAckSchema,
  OfflinePullRequestSchema,
  OfflinePullResponseSchema,
  PushTokenOp,
  PushTokenRequestSchema,
  PushTokenResponseSchema,
  ReceiptKind,
  ReceiptSchema,
  ResumeRequestSchema,
  ResumeResponseSchema,
  type Msg,
} from "./gen/longlink_pb.js";
import { Cmd, type Frame } from "./frame.js";
import { Connection } from "./connection.js";
import { FATAL_LOGIN_CODES, LonglinkError, closedError, timeoutError } from "./errors.js";
import { contentToParts, messageFromWire, userFromWire } from "./content.js";
import { BoundedSet, Emitter } from "./emitter.js";
import { newClientMsgId } from "./ids.js";
import type {
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

interface Events {
  message: (message: Message) => void;
  typing: (typing: Typing) => void;
  receipt: (receipt: Receipt) => void;
  state: (state: State, detail: StateDetail) => void;
  kicked: (kick: Kicked) => void;
  error: (error: LonglinkError) => void;
}

/** Server codes after which the same request may succeed if sent again (protocol §8). */
const RETRY_LATER = new Set(["RATE_LIMITED", "STORE_UNAVAILABLE", "BUS_UNAVAILABLE", "OVERLOADED"]);
/** KICK reasons that end the client: reconnecting would fight another session or be refused. */
const FINAL_KICKS = new Set(["REPLACED", "LOGGED_OUT", "BLOCKED"]);
const SEEN_CAPACITY = 20_000;
const MAX_ACK_IDS = 1000; // per MSG_ACK and per ResumeRequest.acked_msgids (§5.4, §5.9)
const CATCH_UP_PAGE = 200;

interface Waiter {
  resolve: (conn: Connection) => void;
  reject: (error: LonglinkError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** What the server told us at LOGIN / RESUME; kept across connections. */
interface SessionInfo {
  resumeToken: string;
  epoch: bigint;
  holdSecs: number;
  keepaliveSecs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
}

export class Client {
  private readonly options: ClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly timeoutMs: number;
  private readonly maxBodyBytes: number;
  private readonly events = new Emitter<Events>();

  private _state: State = "closed";
  private _uid = "";
  private _sessionId = 0n;
  private started = false;
  private finished = false;
  private loggingOut = false;
  private connectPromise: Promise<void> | undefined;

  /** The logged-in connection; undefined while (re)connecting. */
  private conn: Connection | undefined;
  private session: SessionInfo = {
    resumeToken: "",
    epoch: 0n,
    holdSecs: 0,
    keepaliveSecs: 30,
    reconnectMinMs: 0,
    reconnectMaxMs: 0,
  };
  private droppedAtMs = 0;
  private attempt = 0;
  /** At least this long before the next reconnect: a KICK's backoff_ms, an ERROR's retry_after_ms. */
  private delayFloorMs = 0;

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private keepaliveTimer: ReturnType<typeof setInterval> | undefined;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly waiters = new Set<Waiter>();
  private readonly sleeps = new Set<Waiter>();

  private readonly seen = new BoundedSet<bigint>(SEEN_CAPACITY);
  private lastMsgid = 0n;
  private ackQueue: bigint[] = [];
  /** The last acks sent: they may be lost with the link, so a RESUME repeats them. */
  private recentAcks: bigint[] = [];

  constructor(options: ClientOptions) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) {
      throw new TypeError(
        "no WebSocket: pass options.WebSocket (Node 20 needs --experimental-websocket for a global one)",
      );
    }
    this.options = options;
    this.WS = WS;
    this.timeoutMs = options.requestTimeoutMs ?? 10_000;
    this.maxBodyBytes = options.maxBodyBytes ?? 65_536;
  }

  /** Creates a client and connects it. */
  static async connect(options: ClientOptions): Promise<Client> {
    const client = new Client(options);
    await client.connect();
    return client;
  }

  get state(): State {
    return this._state;
  }

  /** The uid of the LOGIN answer ("" before). */
  get uid(): string {
    return this._uid;
  }

  get sessionId(): bigint {
    return this._sessionId;
  }

  on(event: "message", listener: (message: Message) => void): () => void;
  on(event: "typing", listener: (typing: Typing) => void): () => void;
  on(event: "receipt", listener: (receipt: Receipt) => void): () => void;
  on(event: "state", listener: (state: State, detail: StateDetail) => void): () => void;
  on(event: "kicked", listener: (kick: Kicked) => void): () => void;
  on(event: "error", listener: (error: LonglinkError) => void): () => void;
  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    return this.events.on(event, listener);
  }

  // ---------------------------------------------------------------- connecting

  /** Opens the socket and logs in; rejects with a LonglinkError (e.g. BAD_TOKEN) and ends the client. */
  connect(): Promise<void> {
    if (this.connectPromise !== undefined) return this.connectPromise;
    if (this.finished) return Promise.reject(closedError());
    this.started = true;
    this.setState("connecting", {});
    this.connectPromise = this.establish(false).catch((err: unknown) => {
      const error = asLonglinkError(err);
      this.finish(error);
      throw error;
    });
    return this.connectPromise;
  }

  /**
   * Opens a connection and makes it the session's: RESUME within the hold, else LOGIN (with
   * prior_epoch when reconnecting by ourselves, §6.3). Then catches up on what was missed.
   */
  private async establish(reconnecting: boolean): Promise<void> {
    const conn = await Connection.open(this.options.url, this.WS, this.timeoutMs);
    if (this.finished) {
      conn.close();
      throw closedError();
    }
    conn.setHandlers({
      onPush: (frame) => this.onPush(conn, frame),
      onClose: (error) => this.onConnectionClosed(conn, error),
    });
    try {
      let resumed: Msg[] | undefined;
      let pullFrom: bigint | undefined;
      const { session } = this;
      const withinHold = Date.now() - this.droppedAtMs < session.holdSecs * 1000;
      if (reconnecting && session.resumeToken !== "" && withinHold) {
        try {
          const answer = await this.resume(conn);
          resumed = answer.messages;
          // gap_free = false: the answer could not hold everything; pull after its last message.
          if (!answer.gapFree) pullFrom = resumed.at(-1)?.msgid ?? 0n;
        } catch (err) {
          // RESUME_REJECTED leaves the connection open for a LOGIN (§6.5).
          if (!(err instanceof LonglinkError) || err.code !== "RESUME_REJECTED") throw err;
          session.resumeToken = "";
        }
      }
      if (resumed === undefined) {
        await this.login(conn, reconnecting ? session.epoch : 0n);
        pullFrom = 0n;
      }
      if (this.finished) throw closedError();
      this.online(conn, resumed, pullFrom);
    } catch (err) {
      conn.close(asLonglinkError(err));
      throw err;
    }
  }

  private async resume(conn: Connection): Promise<{ messages: Msg[]; gapFree: boolean }> {
    const acked = [...this.recentAcks, ...this.ackQueue].slice(-MAX_ACK_IDS);
    const body = toBinary(
      ResumeRequestSchema,
      create(ResumeRequestSchema, {
        resumeToken: this.session.resumeToken,
        lastMsgid: this.lastMsgid,
        ackedMsgids: acked,
      }),
    );
    const r = await conn.call(Cmd.RESUME, body, ResumeResponseSchema, this.timeoutMs);
    // The server acknowledged `acked` first (§5.4): what was queued is done if it all fit.
    if (this.recentAcks.length + this.ackQueue.length <= MAX_ACK_IDS) this.ackQueue = [];
    this.session.resumeToken = r.resumeToken;
    this.session.holdSecs = r.holdSecs;
    if (r.keepaliveIntervalSecs > 0) this.session.keepaliveSecs = r.keepaliveIntervalSecs;
    this._sessionId = r.sessionId;
    if (r.uid !== "") this._uid = r.uid;
    return { messages: r.messages, gapFree: r.gapFree };
  }

  private async login(conn: Connection, priorEpoch: bigint): Promise<void> {
    const { token } = this.options;
    const tokenText = typeof token === "function" ? await token() : token;
    const body = toBinary(
      LoginRequestSchema,
      create(LoginRequestSchema, {
        token: tokenText,
        appcode: this.options.appcode,
        deviceId: this.options.deviceId,
        resumeCapable: true,
        clientVersion: this.options.clientVersion ?? "longlink-sdk-ts/0.1.0",
        deviceClass: this.options.deviceClass ?? "web",
        priorEpoch,
      }),
    );
    const r = await conn.call(Cmd.LOGIN, body, LoginResponseSchema, this.timeoutMs);
    this.session = {
      resumeToken: r.resumeToken,
      epoch: r.epoch,
      holdSecs: r.holdSecs,
      keepaliveSecs: r.keepaliveIntervalSecs > 0 ? r.keepaliveIntervalSecs : 30,
      reconnectMinMs: r.reconnectMinMs,
      reconnectMaxMs: r.reconnectMaxMs,
    };
    this._sessionId = r.sessionId;
    this._uid = r.uid;
  }

  /** The connection is logged in: waiting requests go out, held pushes and the catch-up follow. */
  private online(conn: Connection, resumed: Msg[] | undefined, pullFrom: bigint | undefined): void {
    this.conn = conn;
    this.attempt = 0;
    this.startKeepalive(conn);
    this.setState("connected", { resumed: resumed !== undefined });
    if (this.finished) return; // a state listener closed the client
    for (const msg of resumed ?? []) this.deliver(msg);
    conn.releasePushes();
    for (const waiter of [...this.waiters]) {
      this.waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.resolve(conn);
    }
    this.scheduleAckFlush();
    if (pullFrom !== undefined) void this.catchUp(conn, pullFrom);
  }

  /** OFFLINE_PULL from `cursor` until `more` is false (§6.6 step 3); every message via deliver(). */
  private async catchUp(conn: Connection, cursor: bigint): Promise<void> {
    try {
      for (;;) {
        if (conn !== this.conn) return;
        const body = toBinary(
          OfflinePullRequestSchema,
          create(OfflinePullRequestSchema, { cursor, pageSize: CATCH_UP_PAGE }),
        );
        const page = await conn.call(Cmd.OFFLINE_PULL, body, OfflinePullResponseSchema, this.timeoutMs);
        for (const msg of page.messages) this.deliver(msg);
        if (!page.more || page.nextCursor <= cursor) return;
        cursor = page.nextCursor;
      }
    } catch (err) {
      // A lost link ends this catch-up; the next connection starts its own.
      const error = asLonglinkError(err);
      if (error.code !== "CLOSED" && error.code !== "NETWORK") this.events.emit("error", error);
    }
  }

  private onConnectionClosed(conn: Connection, error: LonglinkError): void {
    if (conn !== this.conn) return; // a connection still logging in: establish() reports it
    this.conn = undefined;
    this.stopKeepalive();
    if (this.finished) return;
    if (this.loggingOut) {
      this.finish();
      return;
    }
    this.droppedAtMs = Date.now();
    this.scheduleReconnect(error);
  }

  private scheduleReconnect(error: LonglinkError): void {
    if (this.options.reconnect?.enabled === false) {
      this.finish(error);
      return;
    }
    this.setState("reconnecting", { error });
    const minMs = this.session.reconnectMinMs || (this.options.reconnect?.minMs ?? 500);
    const maxMs = Math.max(minMs, this.session.reconnectMaxMs || (this.options.reconnect?.maxMs ?? 15_000));
    const step = Math.min(maxMs, minMs * 2 ** Math.min(this.attempt, 20));
    this.attempt += 1;
    // Full jitter over the upper half: clients dropped together do not come back together.
    let delay = step / 2 + Math.random() * (step / 2);
    if (this.delayFloorMs > 0) delay = Math.max(delay, this.delayFloorMs + Math.random() * Math.min(this.delayFloorMs, 1000) * 0.2);
    this.delayFloorMs = 0;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.establish(true).catch((err: unknown) => {
        if (this.finished) return;
        const e = asLonglinkError(err);
        if (FATAL_LOGIN_CODES.has(e.code) || (e.code === "BANNED" && e.retryAfterMs === 0)) {
          this.finish(e);
          return;
        }
        if (e.retryAfterMs > 0) this.delayFloorMs = Math.max(this.delayFloorMs, e.retryAfterMs);
        this.scheduleReconnect(e);
      });
    }, delay);
  }

  private startKeepalive(conn: Connection): void {
    this.stopKeepalive();
    const intervalMs = Math.max(1, this.session.keepaliveSecs) * 1000;
    this.keepaliveTimer = setInterval(() => {
      if (conn !== this.conn) return;
      // No byte for 3 intervals: the link is dead even if the socket does not know it yet (§6.4).
      if (Date.now() - conn.lastReceivedMs > 3 * intervalMs) {
        conn.close(new LonglinkError("NETWORK", "nothing received for 3 keepalive intervals"));
        return;
      }
      const body = toBinary(KeepaliveRequestSchema, create(KeepaliveRequestSchema, { clientTimeMs: BigInt(Date.now()) }));
      conn.call(Cmd.KEEPALIVE, body, KeepaliveResponseSchema, this.timeoutMs).catch((err: unknown) => {
        if (conn === this.conn && asLonglinkError(err).code === "TIMEOUT") {
          conn.close(new LonglinkError("NETWORK", "keepalive unanswered"));
        }
      });
    }, intervalMs);
  }

  private stopKeepalive(): void {
    if (this.keepaliveTimer !== undefined) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = undefined;
  }

  /** Ends the client for good: every timer cleared, every waiting promise rejected. */
  private finish(error?: LonglinkError): void {
    if (this.finished) return;
    this.finished = true;
    this.started = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    if (this.ackTimer !== undefined) clearTimeout(this.ackTimer);
    this.reconnectTimer = this.ackTimer = undefined;
    this.stopKeepalive();
    const conn = this.conn;
    this.conn = undefined;
    conn?.close(closedError());
    const reason = error ?? closedError();
    for (const w of [...this.waiters, ...this.sleeps]) {
      clearTimeout(w.timer);
      w.reject(reason.code === "CLOSED" ? reason : closedError(reason.message));
    }
    this.waiters.clear();
    this.sleeps.clear();
    this.setState("closed", error === undefined ? {} : { error });
  }

  private setState(state: State, detail: StateDetail): void {
    if (state === this._state && state !== "connected") return;
    this._state = state;
    this.events.emit("state", state, detail);
  }

  // ---------------------------------------------------------------- receiving

  private onPush(conn: Connection, frame: Frame): void {
    try {
      switch (frame.cmd) {
        case Cmd.MSG:
          this.onMsg(fromBinary(MsgSchema, frame.body));
          break;
        case Cmd.RECEIPT: {
          const r = fromBinary(ReceiptSchema, frame.body);
          if (r.kind !== ReceiptKind.DELIVERED && r.kind !== ReceiptKind.READ) break; // unknown kind: ignored
          this.events.emit("receipt", {
            kind: r.kind === ReceiptKind.READ ? "read" : "delivered",
            by: userFromWire(r.by),
            byDevice: r.byDevice,
            msgids: r.msgids,
            readUpto: r.readUpto,
          });
          break;
        }
        case Cmd.KICK:
          this.onKick(conn, frame);
          break;
        case Cmd.ERROR: {
          const error = conn.errorOf(frame);
          if (error.retryAfterMs > 0) this.delayFloorMs = Math.max(this.delayFloorMs, error.retryAfterMs);
          this.events.emit("error", error);
          break;
        }
        default:
          break; // pushes of commands this SDK does not know are ignored (§1)
      }
    } catch (err) {
      // An undecodable push body: the server and this SDK disagree on the schema.
      conn.close(new LonglinkError("PROTOCOL", `undecodable push cmd ${frame.cmd}: ${String(err)}`));
    }
  }

  private onKick(conn: Connection, frame: Frame): void {
    const kick = fromBinary(KickSchema, frame.body);
    const reason = (KickReason as unknown as Record<number, string | undefined>)[kick.reason] ?? "KICK_REASON_UNSPECIFIED";
    if (FINAL_KICKS.has(reason)) {
      this.events.emit("kicked", { reason, message: kick.message, byDeviceId: kick.byDeviceId });
      this.finish(new LonglinkError("KICKED", `${reason} ${kick.message}`.trim()));
      return;
    }
    // SERVER_SHUTDOWN, SLOW_CONSUMER, RECONNECT (and unknown reasons): come back after the
    // advised backoff. reconnect_to names a TCP gate address, useless to a WebSocket client.
    this.delayFloorMs = Math.max(this.delayFloorMs, kick.backoffMs);
    conn.close(new LonglinkError("NETWORK", `kicked: ${reason} ${kick.message}`.trim()));
  }

  private onMsg(msg: Msg): void {
    if (msg.msgid === 0n) {
      // Ephemeral content: never deduplicated or acknowledged (§7.3).
      if (msg.contentType === ContentType.TYPING) {
        this.events.emit("typing", { from: userFromWire(msg.from), fromDevice: msg.fromDevice });
      }
      return;
    }
    this.deliver(msg);
  }

  /** Hands a stored message to the app once, then queues its ack (repeats are acked again, §7.3). */
  private deliver(msg: Msg, emit = true): Message {
    const message = messageFromWire(msg);
    if (msg.msgid > this.lastMsgid) this.lastMsgid = msg.msgid;
    if (!this.seen.has(msg.msgid)) {
      this.seen.add(msg.msgid);
      if (emit) this.events.emit("message", message);
    }
    if (this.options.autoAck !== false && this.isToMe(message)) this.queueAck([msg.msgid]);
    return message;
  }

  /** Only messages to this user are in its inbox; acking anything else is NOT_FOUND (§5.9). */
  private isToMe(message: Message): boolean {
    return message.to.appcode === this.options.appcode && message.to.uid === this._uid && message.msgid !== 0n;
  }

  private queueAck(msgids: bigint[]): void {
    this.ackQueue.push(...msgids);
    this.scheduleAckFlush();
  }

  private scheduleAckFlush(): void {
    if (this.ackTimer !== undefined || this.ackQueue.length === 0 || this.finished) return;
    // A short delay batches the acks of a burst of pushes into one frame.
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      this.flushAcks();
    }, 10);
  }

  private flushAcks(): void {
    const conn = this.conn;
    if (conn === undefined || !conn.isOpen) return; // sent after the reconnect (and named in RESUME)
    while (this.ackQueue.length > 0) {
      const chunk = [...new Set(this.ackQueue.splice(0, MAX_ACK_IDS))];
      conn.sendAck(Cmd.MSG_ACK, toBinary(MsgAckSchema, create(MsgAckSchema, { msgids: chunk })));
      this.recentAcks.push(...chunk);
    }
    if (this.recentAcks.length > MAX_ACK_IDS) this.recentAcks = this.recentAcks.slice(-MAX_ACK_IDS);
  }

  // ---------------------------------------------------------------- requests

  /** The logged-in connection, waiting (until `deadline`) while the client (re)connects. */
  private ready(deadline: number): Promise<Connection> {
    if (this.finished) return Promise.reject(closedError());
    if (!this.started) return Promise.reject(closedError("connect() was not called"));
    if (this.conn !== undefined && this.conn.isOpen) return Promise.resolve(this.conn);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(timeoutError("a request waiting for the connection"));
        }, Math.max(0, deadline - Date.now())),
      };
      this.waiters.add(waiter);
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve: () => resolve(),
        reject,
        timer: setTimeout(() => {
          this.sleeps.delete(waiter);
          resolve();
        }, ms),
      };
      this.sleeps.add(waiter);
    });
  }

  /**
   * Sends one request and decodes its answer, within `budgetMs` in all. A request whose
   * connection drops is sent again (the same bytes: a C2C keeps its client_msg_id) once the
   * client is back; an answer saying "later" (RATE_LIMITED, STORE_UNAVAILABLE…) is retried after
   * its retry_after_ms.
   */
  private async request<S extends DescMessage>(cmd: number, body: Uint8Array, schema: S, budgetMs: number): Promise<MessageShape<S>> {
    if (body.length > this.maxBodyBytes) {
      throw new LonglinkError(
        "BODY_TOO_LARGE",
        `this request's body is ${body.length} bytes; the limit is ${this.maxBodyBytes} (maxBodyBytes)`,
      );
    }
    const deadline = Date.now() + budgetMs;
    for (;;) {
      const conn = await this.ready(deadline);
      const left = deadline - Date.now();
      try {
        return await conn.call(cmd, body, schema, Math.min(left, this.timeoutMs));
      } catch (err) {
        const error = asLonglinkError(err);
        const remaining = deadline - Date.now();
        if (this.finished || remaining <= 0) throw error;
        if (error.code === "NETWORK" || error.code === "CLOSED") continue; // after the reconnect, send again
        if (error.code === "TIMEOUT") continue; // no answer on this link: the same request again
        if (RETRY_LATER.has(error.code)) {
          await this.sleep(Math.min(remaining, Math.max(error.retryAfterMs, 100)));
          continue;
        }
        throw error;
      }
    }
  }

  /** C2C; resolves when the message is durable. Retries (same clientMsgId) until 3 × requestTimeoutMs. */
  async send(to: UserRef, content: Content, options: { clientMsgId?: string } = {}): Promise<SendReceipt> {
    const clientMsgId = options.clientMsgId ?? newClientMsgId();
    const parts = contentToParts(content);
    const body = toBinary(
      C2cRequestSchema,
      create(C2cRequestSchema, {
        to: { appcode: to.appcode, uid: to.uid },
        clientMsgId,
        contentType: parts.contentType,
        msgtype: parts.msgtype,
        content: parts.bytes,
      }),
    );
    const r = await this.request(Cmd.C2C, body, C2cResponseSchema, 3 * this.timeoutMs);
    return { msgid: r.msgid, senddateMs: Number(r.senddateMs), duplicate: r.duplicate, clientMsgId };
  }

  sendText(to: UserRef, text: string, options: { clientMsgId?: string } = {}): Promise<SendReceipt> {
    return this.send(to, { type: "text", text }, options);
  }

  /**
   * A typing indicator: C2C with content_type TYPING (§5.7). Best effort and never rejects: only
   * sent while connected; the server relays it to the peer's online sessions and answers an
   * empty C2cResponse (msgid 0), which is read and dropped.
   */
  typing(to: UserRef): void {
    const conn = this.conn;
    if (conn === undefined || !conn.isOpen || this.finished) return;
    const body = toBinary(
      C2cRequestSchema,
      create(C2cRequestSchema, { to: { appcode: to.appcode, uid: to.uid }, contentType: ContentType.TYPING }),
    );
    conn.call(Cmd.C2C, body, C2cResponseSchema, this.timeoutMs).catch(() => {
      /* best effort */
    });
  }

  /** C2S to the business servers (routed by appcode and msgtype). Retried like send(). */
  async c2s(msgtype: number, payload: Uint8Array, options: { clientMsgId?: string } = {}): Promise<{ topic: string }> {
    const body = toBinary(
      C2sRequestSchema,
      create(C2sRequestSchema, { msgtype, payload, clientMsgId: options.clientMsgId ?? newClientMsgId() }),
    );
    const r = await this.request(Cmd.C2S, body, C2sResponseSchema, 3 * this.timeoutMs);
    return { topic: r.topic };
  }

  /**
   * One page of this device's unacknowledged messages (msgid > cursor, ascending). The messages
   * count as handed to the app: they are not emitted as `message` events later, and (with
   * autoAck) they are acknowledged.
   */
  async pullOffline(cursor = 0n, pageSize = 0): Promise<Page> {
    const body = toBinary(OfflinePullRequestSchema, create(OfflinePullRequestSchema, { cursor, pageSize }));
    const r = await this.request(Cmd.OFFLINE_PULL, body, OfflinePullResponseSchema, this.timeoutMs);
    const messages = r.messages.map((msg) => this.deliver(msg, false));
    return { messages, nextCursor: r.nextCursor, more: r.more };
  }

  /** One page of the conversation with `peer`, both directions. `older` (default): newest first. */
  async history(
    peer: UserRef,
    options: { cursor?: bigint; direction?: "older" | "newer"; pageSize?: number } = {},
  ): Promise<Page> {
    const body = toBinary(
      HistoryPullRequestSchema,
      create(HistoryPullRequestSchema, {
        with: { appcode: peer.appcode, uid: peer.uid },
        cursor: options.cursor ?? 0n,
        direction: options.direction === "newer" ? HistoryDirection.NEWER : HistoryDirection.OLDER,
        pageSize: options.pageSize ?? 0,
      }),
    );
    const r = await this.request(Cmd.HISTORY_PULL, body, HistoryPullResponseSchema, this.timeoutMs);
    return { messages: r.messages.map(messageFromWire), nextCursor: r.nextCursor, more: r.more };
  }

  /** This user's conversations, the most recent first. Page with beforeMsgid = the last entry's last.msgid. */
  async conversations(options: { limit?: number; beforeMsgid?: bigint } = {}): Promise<{ conversations: Conversation[]; more: boolean }> {
    const body = toBinary(
      ConversationsRequestSchema,
      create(ConversationsRequestSchema, { limit: options.limit ?? 0, beforeMsgid: options.beforeMsgid ?? 0n }),
    );
    const r = await this.request(Cmd.CONVERSATIONS, body, ConversationsResponseSchema, this.timeoutMs);
    return {
      conversations: r.conversations.map((c) => ({
        with: userFromWire(c.with),
        last: c.last === undefined ? undefined : messageFromWire(c.last),
        unread: c.unread,
        readUpto: c.readUpto,
        peerReadUpto: c.peerReadUpto,
      })),
      more: r.more,
    };
  }

  /** Marks the conversation with `peer` read up to `msgid` (marks only move forward). */
  async markRead(peer: UserRef, msgid: bigint): Promise<{ readUpto: bigint; unread: number }> {
    const body = toBinary(
      MarkReadRequestSchema,
      create(MarkReadRequestSchema, { with: { appcode: peer.appcode, uid: peer.uid }, msgid }),
    );
    const r = await this.request(Cmd.MARK_READ, body, MarkReadResponseSchema, this.timeoutMs);
    return { readUpto: r.readUpto, unread: r.unread };
  }

  /**
   * Registers this device's offline push token for `provider` ("apns", "fcm" or a vendor
   * channel the server configures), replacing its previous token of that provider, with the
   * device class the server measures provider delivery by. Resolves with the device's tokens.
   * An unknown provider rejects with INVALID_ARGUMENT. `logout()` removes the tokens.
   */
  async registerPushToken(provider: string, token: string, deviceClass: PushDeviceClass = {}): Promise<PushTokenInfo[]> {
    return this.pushTokenRequest({
      op: PushTokenOp.REGISTER,
      provider,
      token,
      platform: deviceClass.platform ?? "web",
      vendor: deviceClass.vendor ?? "",
      appVersion: deviceClass.appVersion ?? "",
    });
  }

  /** Removes this device's push token of `provider`, or all of them (no provider). Resolves with the tokens left. */
  async removePushToken(provider?: string): Promise<PushTokenInfo[]> {
    return this.pushTokenRequest({ op: PushTokenOp.REMOVE, provider: provider ?? "" });
  }

  /** This device's push tokens. */
  async pushTokens(): Promise<PushTokenInfo[]> {
    return this.pushTokenRequest({ op: PushTokenOp.LIST });
  }

  private async pushTokenRequest(fields: MessageInitShape<typeof PushTokenRequestSchema>): Promise<PushTokenInfo[]> {
    const body = toBinary(PushTokenRequestSchema, create(PushTokenRequestSchema, fields));
    const r = await this.request(Cmd.PUSH_TOKEN, body, PushTokenResponseSchema, this.timeoutMs);
    return r.tokens.map((t) => ({ provider: t.provider, token: t.token }));
  }

  /**
   * Reports that these offline push notifications (their payload's `ll_nid`) reached this
   * device; resolves with how many the server matched. At most 256 ids per call.
   */
  async ackNotifications(ids: bigint[]): Promise<number> {
    const body = toBinary(NotificationAckSchema, create(NotificationAckSchema, { ids: ids.filter((id) => id !== 0n) }));
    const r = await this.request(Cmd.NOTIFICATION_ACK, body, NotificationAckResponseSchema, this.timeoutMs);
    return r.matched;
  }

  /** Acknowledges messages by hand (with autoAck: false). Only ack messages whose `to` is you. */
  ack(msgids: bigint[]): void {
    const ids = msgids.filter((id) => id !== 0n);
    if (ids.length > 0) this.queueAck(ids);
  }

  /** A KEEPALIVE round trip; resolves with the server's clock (unix ms). */
  async keepalive(): Promise<number> {
    const body = toBinary(KeepaliveRequestSchema, create(KeepaliveRequestSchema, { clientTimeMs: BigInt(Date.now()) }));
    const r = await this.request(Cmd.KEEPALIVE, body, KeepaliveResponseSchema, this.timeoutMs);
    return Number(r.serverTimeMs);
  }

  /** Ends the session on the server (no hold, no RESUME), then the client: state "closed". */
  async logout(): Promise<void> {
    if (this.finished) return;
    this.loggingOut = true;
    this.flushAcks();
    const conn = this.conn;
    try {
      if (conn !== undefined && conn.isOpen) {
        await conn.call(Cmd.LOGOUT, toBinary(LogoutRequestSchema, create(LogoutRequestSchema)), LogoutResponseSchema, this.timeoutMs);
      }
    } finally {
      this.finish();
    }
  }

  /** Drops the socket without LOGOUT (the server holds the session for a while); state "closed". */
  close(): void {
    this.finish();
  }
}

function asLonglinkError(err: unknown): LonglinkError {
  if (err instanceof LonglinkError) return err;
  return new LonglinkError("NETWORK", String(err));
}
