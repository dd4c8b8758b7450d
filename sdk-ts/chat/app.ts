// The signed-in page: the conversation list on the left, one conversation on the right (one or
// the other on a narrow screen). Everything comes from the SDK's Client: conversations() and
// history() for what is stored, the message / typing / receipt / state events for what happens.
import { LonglinkError, newClientMsgId, parseUserRef, userKey } from "../src/index.ts";
import type { Client, Content, Message, Receipt, State, UserRef } from "../src/index.ts";
import { byId, formatBytes, formatDay, formatFull, formatListTime, formatTime, h, paintAvatar, show } from "./dom.ts";
import { composeRich, renderRich } from "./rich.ts";
import type { ChatConfig } from "./config.ts";

type Status = "pending" | "sent" | "delivered" | "read" | "failed" | "received";

/** One message on screen, or one on its way (msgid 0 until the server stored it). */
interface Item {
  msgid: bigint;
  clientMsgId: string;
  mine: boolean;
  content: Content;
  time: number;
  status: Status;
  error: string;
  el: HTMLLIElement | undefined;
}

interface Conv {
  key: string;
  peer: UserRef;
  byMsgid: Map<bigint, Item>;
  byClientId: Map<string, Item>;
  /** Newest stored message's msgid and time; the list's order. */
  lastMsgid: bigint;
  lastTime: number;
  preview: string;
  previewMine: boolean;
  unread: number;
  /** The newest msgid the server's unread count already includes (CONVERSATIONS). */
  countedUpto: bigint;
  readUpto: bigint;
  peerReadUpto: bigint;
  /** Delivered receipts that arrived before the send's answer named the msgid. */
  earlyDelivered: Set<bigint>;
  /** HISTORY_PULL paging backwards: the oldest msgid loaded (0 = start from the newest). */
  olderCursor: bigint;
  more: boolean;
  loaded: boolean;
  loading: boolean;
  typingUntil: number;
  li: HTMLLIElement | undefined;
}

const PAGE = 30;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 6000;
const NEAR_BOTTOM_PX = 120;
const encoder = new TextEncoder();

function same(a: UserRef, b: UserRef): boolean {
  return a.appcode === b.appcode && a.uid === b.uid;
}

function errorText(err: unknown): string {
  if (err instanceof LonglinkError || err instanceof Error) return err.message;
  return String(err);
}

function isUnknownCmd(err: unknown): boolean {
  return err instanceof LonglinkError && err.code === "UNKNOWN_CMD";
}

/** The one-line text of a message for the list and for screen readers. */
function previewOf(content: Content): string {
  switch (content.type) {
    case "text":
      return content.text.replace(/\s+/g, " ").trim();
    case "rich":
      return renderRich(content.markup).preview;
    case "business":
      return `[business message, type ${content.msgtype}]`;
    case "unknown":
      return "[unsupported message]";
  }
}

export class ChatApp {
  private readonly convs = new Map<string, Conv>();
  private open: Conv | undefined;
  /** false once the server answered UNKNOWN_CMD: the list is what this page saw. */
  private listFromServer: boolean | undefined;
  private readMarks = true;
  private lastTypingSent = 0;
  /** The user is at the newest message: keep it in view when sizes change. */
  private stickToBottom = true;
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly unsubscribe: (() => void)[] = [];
  private readonly peersKey: string;
  private readonly meKey: string;

  // Elements of index.html.
  private readonly list = byId<HTMLUListElement>("conversations");
  private readonly messages = byId<HTMLOListElement>("messages");
  private readonly scroller = byId("scroller");
  private readonly input = byId<HTMLTextAreaElement>("composer-input");
  private readonly composerError = byId("composer-error");
  private readonly count = byId("composer-count");
  private readonly imageRow = byId("image-row");
  private readonly imageUrl = byId<HTMLInputElement>("image-url");
  private readonly imageButton = byId<HTMLButtonElement>("fmt-image");
  private readonly shakeButton = byId<HTMLButtonElement>("fmt-shake");
  private readonly color = byId<HTMLSelectElement>("fmt-color");
  private readonly size = byId<HTMLSelectElement>("fmt-size");
  private readonly banner = byId("banner");

  constructor(
    private readonly config: ChatConfig,
    private readonly client: Client,
    private readonly me: UserRef,
    private readonly onSignedOut: (message: string) => void,
  ) {
    this.meKey = userKey(me);
    this.peersKey = `longlink.chat.peers.${this.meKey}`;
  }

  start(): void {
    byId("me-name").textContent = this.meKey;
    paintAvatar(byId("me-avatar"), this.meKey, this.me.uid);
    this.restoreLocalPeers();
    this.wire();
    this.showState(this.client.state, {});
    void this.refreshConversations();
    const fromHash = this.peerFromHash();
    if (fromHash !== undefined) this.openConv(this.ensureConv(fromHash), false);
    this.renderList();
  }

  // ------------------------------------------------------------------ events

  private wire(): void {
    const c = this.client;
    this.unsubscribe.push(
      c.on("message", (m) => this.onMessage(m)),
      c.on("typing", (t) => this.onTyping(t.from)),
      c.on("receipt", (r) => this.onReceipt(r)),
      c.on("state", (s, d) => this.onState(s, d)),
      c.on("kicked", (k) => this.signOut(`Signed out: ${k.reason}${k.message ? ` — ${k.message}` : ""}`)),
      c.on("error", (e) => {
        // Errors not tied to a request (a catch-up pull that failed, a refused ack).
        if (e.code !== "CLOSED") console.warn("longlink:", e.message);
      }),
    );
    byId<HTMLFormElement>("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      void this.sendFromComposer();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
        e.preventDefault();
        void this.sendFromComposer();
      }
    });
    this.input.addEventListener("input", () => {
      this.autoGrow();
      this.updateCount();
      const conv = this.open;
      if (conv !== undefined && this.input.value !== "" && Date.now() - this.lastTypingSent > TYPING_SEND_EVERY_MS) {
        this.lastTypingSent = Date.now();
        this.client.typing(conv.peer);
      }
    });
    this.imageButton.addEventListener("click", () => this.toggleImageRow(this.imageRow.hidden));
    this.imageUrl.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        void this.sendFromComposer();
      }
    });
    this.shakeButton.addEventListener("click", () => {
      const on = this.shakeButton.getAttribute("aria-pressed") !== "true";
      this.shakeButton.setAttribute("aria-pressed", String(on));
      this.input.focus();
    });
    byId<HTMLFormElement>("new-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.startNew();
    });
    byId("back").addEventListener("click", () => this.closeConv());
    byId("logout").addEventListener("click", () => void this.logout());
    this.scroller.addEventListener("scroll", () => {
      this.stickToBottom = this.nearBottom();
      if (this.open !== undefined && this.scroller.scrollTop < 80) void this.loadOlder(this.open);
    });
    // A narrower window or a growing composer must not push the newest message out of sight.
    new ResizeObserver(() => {
      if (this.stickToBottom) this.scrollToBottom();
    }).observe(this.scroller);
    this.list.addEventListener("keydown", (e) => this.listKeys(e));
    document.addEventListener("keydown", (e) => {
      if (e.key !== "Escape" || e.defaultPrevented) return;
      if (!this.imageRow.hidden) {
        this.toggleImageRow(false);
      } else if (!this.composerError.hidden) {
        show(this.composerError, false);
      } else if (this.open !== undefined) {
        this.closeConv();
      }
    });
    document.addEventListener("visibilitychange", () => {
      if (this.open !== undefined) this.markRead(this.open);
    });
    window.addEventListener("hashchange", () => {
      const peer = this.peerFromHash();
      if (peer !== undefined && (this.open === undefined || !same(peer, this.open.peer))) this.openConv(this.ensureConv(peer), false);
    });
  }

  private onState(state: State, detail: { resumed?: boolean; error?: LonglinkError }): void {
    this.showState(state, detail);
    if (state === "connected") {
      // Back after a drop: what the list and the open conversation missed. Messages to this
      // user arrive by themselves (the SDK pulls them); our own from other devices do not.
      void this.refreshConversations();
      if (this.open?.loaded) void this.catchUp(this.open);
      for (const conv of this.convs.values()) {
        for (const item of conv.byClientId.values()) if (item.status === "pending") this.renderItem(conv, item);
      }
    }
    if (state === "closed" && detail.error !== undefined && detail.error.code !== "CLOSED") {
      this.signOut(`Disconnected: ${detail.error.message}`);
    }
  }

  private showState(state: State, detail: { error?: LonglinkError }): void {
    document.body.dataset.state = state;
    const conn = byId("conn");
    conn.dataset.state = state;
    const text: Record<State, string> = {
      connecting: "Connecting…",
      connected: "Online",
      reconnecting: "Reconnecting…",
      closed: "Offline",
    };
    byId("conn-text").textContent = text[state];
    if (state === "reconnecting") {
      const why = detail.error !== undefined ? ` (${detail.error.message})` : "";
      this.banner.textContent = `Connection lost — reconnecting${why}. Messages you send now go out when it is back.`;
      show(this.banner, true);
    } else {
      show(this.banner, false);
    }
  }

  private onMessage(m: Message): void {
    const mine = same(m.from, this.me);
    const peer = mine ? m.to : m.from;
    const conv = this.ensureConv(peer);
    const isNew = !conv.byMsgid.has(m.msgid);
    this.addStored(conv, m, true);
    if (!isNew) return;
    if (!mine) {
      conv.typingUntil = 0;
      if (conv === this.open && this.visible()) {
        this.markRead(conv);
      } else if (m.msgid > conv.readUpto && m.msgid > conv.countedUpto) {
        // The login's catch-up may deliver messages the server's count already holds.
        conv.unread += 1;
      }
      const shake = m.content.type === "rich" && renderRich(m.content.markup).shake;
      if (shake && conv === this.open) this.shake();
    }
    this.renderTyping();
    this.renderList();
  }

  private onTyping(from: UserRef): void {
    const conv = this.convs.get(userKey(from));
    if (conv === undefined) return;
    conv.typingUntil = Date.now() + TYPING_SHOW_MS;
    this.renderTyping();
    this.renderListItem(conv);
    if (this.typingTimer !== undefined) clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => {
      this.renderTyping();
      for (const c of this.convs.values()) this.renderListItem(c);
    }, TYPING_SHOW_MS + 50);
  }

  private onReceipt(r: Receipt): void {
    const conv = this.convs.get(userKey(r.by));
    if (conv === undefined) return;
    if (r.kind === "delivered") {
      for (const msgid of r.msgids) {
        const item = conv.byMsgid.get(msgid);
        if (item === undefined) conv.earlyDelivered.add(msgid);
        else if (item.status === "sent") this.setStatus(conv, item, "delivered");
      }
    } else {
      this.applyPeerRead(conv, r.readUpto);
    }
  }

  // ------------------------------------------------------------------ conversations

  private ensureConv(peer: UserRef): Conv {
    const key = userKey(peer);
    let conv = this.convs.get(key);
    if (conv === undefined) {
      conv = {
        key,
        peer: { appcode: peer.appcode, uid: peer.uid },
        byMsgid: new Map(),
        byClientId: new Map(),
        lastMsgid: 0n,
        lastTime: 0,
        preview: "",
        previewMine: false,
        unread: 0,
        countedUpto: 0n,
        readUpto: 0n,
        peerReadUpto: 0n,
        earlyDelivered: new Set(),
        olderCursor: 0n,
        more: true,
        loaded: false,
        loading: false,
        typingUntil: 0,
        li: undefined,
      };
      this.convs.set(key, conv);
      this.saveLocalPeers();
    }
    return conv;
  }

  private async refreshConversations(): Promise<void> {
    if (this.listFromServer === false) return;
    try {
      const { conversations } = await this.client.conversations({ limit: 200 });
      this.listFromServer = true;
      for (const c of conversations) {
        const conv = this.ensureConv(c.with);
        conv.readUpto = c.readUpto > conv.readUpto ? c.readUpto : conv.readUpto;
        conv.unread = conv === this.open && this.visible() ? 0 : c.unread;
        if (c.last !== undefined && c.last.msgid > conv.countedUpto) conv.countedUpto = c.last.msgid;
        if (c.last !== undefined) this.addStored(conv, c.last, false);
        this.applyPeerRead(conv, c.peerReadUpto);
      }
      show(byId("list-note"), false);
      if (this.open !== undefined) this.markRead(this.open);
    } catch (err) {
      if (isUnknownCmd(err)) {
        // A server without CONVERSATIONS: the list is what this browser has seen.
        this.listFromServer = false;
        const note = byId("list-note");
        note.textContent = "This server does not list conversations yet: showing the ones seen in this browser.";
        show(note, true);
      } else if (!(err instanceof LonglinkError && err.code === "CLOSED")) {
        console.warn("conversations:", errorText(err));
      }
    }
    this.renderList();
  }

  private openConv(conv: Conv, focusInput: boolean): void {
    const changed = this.open !== conv;
    this.open = conv;
    document.body.dataset.pane = "conv";
    show(byId("conv-empty"), false);
    show(byId("conv"), true);
    if (changed) {
      byId("peer-name").replaceChildren(h("span", { class: "uid" }, conv.peer.uid), h("span", { class: "appcode" }, ` · ${conv.peer.appcode}`));
      paintAvatar(byId("peer-avatar"), conv.key, conv.peer.uid);
      this.messages.replaceChildren();
      show(this.composerError, false);
      const hash = `#with=${encodeURIComponent(conv.key)}`;
      if (location.hash !== hash) history.replaceState(null, "", hash);
      this.renderMessages(conv);
      this.scrollToBottom();
      if (!conv.loaded) void this.loadOlder(conv);
      else void this.catchUp(conv);
    }
    this.renderTyping();
    this.markRead(conv);
    this.renderList();
    document.title = `${conv.peer.uid} — longlink chat`;
    if (focusInput) this.input.focus();
  }

  private closeConv(): void {
    const conv = this.open;
    this.open = undefined;
    document.body.dataset.pane = "list";
    show(byId("conv"), false);
    show(byId("conv-empty"), true);
    history.replaceState(null, "", location.pathname);
    document.title = "longlink chat";
    this.renderList();
    conv?.li?.querySelector("button")?.focus();
  }

  private startNew(): void {
    const field = byId<HTMLInputElement>("new-peer");
    const error = byId("new-error");
    let peer: UserRef;
    try {
      peer = parseUserRef(field.value.trim());
    } catch {
      error.textContent = "Enter the other user as appcode:uid, e.g. 129:alice";
      show(error, true);
      field.focus();
      return;
    }
    if (!this.config.appcodes.includes(peer.appcode)) {
      error.textContent = `Unknown appcode ${peer.appcode}: this server knows ${this.config.appcodes.join(", ")}`;
      show(error, true);
      field.focus();
      return;
    }
    if (encoder.encode(peer.uid).length > 128) {
      error.textContent = "A uid is at most 128 bytes";
      show(error, true);
      return;
    }
    show(error, false);
    field.value = "";
    const conv = this.ensureConv(peer);
    if (conv.lastTime === 0) conv.lastTime = Date.now();
    this.openConv(conv, true);
  }

  /** The newest page on first open, then older pages as the user scrolls up. */
  private async loadOlder(conv: Conv): Promise<void> {
    if (conv.loading || (conv.loaded && !conv.more)) return;
    conv.loading = true;
    const status = byId("history-status");
    if (conv === this.open) status.textContent = "Loading…";
    const before = this.scroller.scrollHeight - this.scroller.scrollTop;
    try {
      const page = await this.client.history(conv.peer, { cursor: conv.olderCursor, pageSize: PAGE });
      const first = !conv.loaded;
      for (const m of page.messages) this.addStored(conv, m, false);
      conv.olderCursor = page.nextCursor;
      conv.more = page.more;
      conv.loaded = true;
      if (conv === this.open) {
        this.renderMessages(conv);
        // Keep what the user was looking at in place while older messages appear above it.
        if (first) this.scrollToBottom();
        else this.scroller.scrollTop = this.scroller.scrollHeight - before;
      }
      this.markRead(conv);
      this.renderList();
    } catch (err) {
      if (conv === this.open) status.textContent = `Could not load the history: ${errorText(err)}`;
      conv.loading = false;
      return;
    }
    conv.loading = false;
    if (conv === this.open) {
      status.textContent = conv.more ? "" : conv.byMsgid.size === 0 && conv.byClientId.size === 0 ? "No messages yet — say hello." : "This is the beginning of the conversation.";
      status.dataset.complete = String(!conv.more);
      // A first page shorter than the screen: keep going until it scrolls or ends.
      if (conv.more && this.scroller.scrollHeight <= this.scroller.clientHeight + 80) void this.loadOlder(conv);
    }
  }

  /** After a reconnect: every message of the open conversation newer than what is shown. */
  private async catchUp(conv: Conv): Promise<void> {
    let cursor = conv.lastMsgid;
    try {
      for (let i = 0; i < 20; i++) {
        const page = await this.client.history(conv.peer, { cursor, direction: "newer", pageSize: 100 });
        for (const m of page.messages) this.addStored(conv, m, false);
        if (!page.more || page.nextCursor <= cursor) break;
        cursor = page.nextCursor;
      }
    } catch (err) {
      if (!(err instanceof LonglinkError && err.code === "CLOSED")) console.warn("catch-up:", errorText(err));
    }
    this.markRead(conv);
    this.renderList();
  }

  /** A stored message (live, history, or a conversation's last) into its conversation. */
  private addStored(conv: Conv, m: Message, live: boolean): void {
    const mine = same(m.from, this.me);
    let item = conv.byMsgid.get(m.msgid);
    if (item === undefined && mine && m.clientMsgId !== "") {
      // Our own send, answered or not yet: the same item, now with its msgid.
      item = conv.byClientId.get(m.clientMsgId);
      if (item !== undefined) {
        item.msgid = m.msgid;
        item.time = m.senddateMs;
        conv.byMsgid.set(m.msgid, item);
        if (item.status === "pending" || item.status === "failed") item.status = "sent";
      }
    }
    if (item === undefined) {
      item = {
        msgid: m.msgid,
        clientMsgId: m.clientMsgId,
        mine,
        content: m.content,
        time: m.senddateMs,
        status: mine ? "sent" : "received",
        error: "",
        el: undefined,
      };
      conv.byMsgid.set(m.msgid, item);
      if (mine && m.clientMsgId !== "") conv.byClientId.set(m.clientMsgId, item);
    }
    if (mine && (m.delivered || conv.earlyDelivered.delete(m.msgid)) && item.status === "sent") item.status = "delivered";
    if (mine && m.msgid <= conv.peerReadUpto && item.msgid !== 0n) item.status = "read";
    if (m.msgid > conv.lastMsgid) {
      conv.lastMsgid = m.msgid;
      conv.lastTime = Math.max(conv.lastTime, m.senddateMs);
      conv.preview = previewOf(m.content);
      conv.previewMine = mine;
      this.saveLocalPeers();
    }
    if (conv === this.open) {
      const atBottom = this.nearBottom();
      this.renderItem(conv, item);
      this.renderMessages(conv);
      if (live && (atBottom || mine)) this.scrollToBottom();
    }
  }

  private applyPeerRead(conv: Conv, upto: bigint): void {
    if (upto <= conv.peerReadUpto) return;
    conv.peerReadUpto = upto;
    for (const item of conv.byMsgid.values()) {
      if (item.mine && item.msgid !== 0n && item.msgid <= upto && item.status !== "read") this.setStatus(conv, item, "read");
    }
  }

  private visible(): boolean {
    return document.visibilityState === "visible";
  }

  /** The open, visible conversation is read up to its newest message (MARK_READ). */
  private markRead(conv: Conv): void {
    if (conv !== this.open || !this.visible()) return;
    conv.unread = 0;
    this.renderListItem(conv);
    this.updateTitle();
    const upto = conv.lastMsgid;
    if (!this.readMarks || upto === 0n || upto <= conv.readUpto) return;
    conv.readUpto = upto;
    this.client.markRead(conv.peer, upto).then(
      (r) => {
        if (r.readUpto > conv.readUpto) conv.readUpto = r.readUpto;
      },
      (err: unknown) => {
        if (isUnknownCmd(err)) this.readMarks = false; // an older server: unread stays local
        else conv.readUpto = 0n; // try again next time
      },
    );
  }

  // ------------------------------------------------------------------ sending

  private async sendFromComposer(): Promise<void> {
    const conv = this.open;
    if (conv === undefined) return;
    const text = this.input.value;
    const imageUrl = this.imageRow.hidden ? "" : this.imageUrl.value.trim();
    const shake = this.shakeButton.getAttribute("aria-pressed") === "true";
    const color = this.color.value;
    const size = this.size.value;
    if (text.trim() === "" && imageUrl === "" && !shake) return;
    if (imageUrl !== "" && !/^https?:\/\//i.test(imageUrl)) {
      this.composerFail("INVALID_ARGUMENT: an image URL starts with https:// or http://");
      this.imageUrl.focus();
      return;
    }
    const rich = imageUrl !== "" || shake || color !== "" || size !== "";
    const content: Content = rich
      ? { type: "rich", markup: composeRich(text, { color, size, imageUrl, shake }) }
      : { type: "text", text };
    const bytes = encoder.encode(content.type === "rich" ? content.markup : text).length;
    if (bytes > this.config.max_content_bytes) {
      this.composerFail(
        `BODY_TOO_LARGE: this message is ${formatBytes(bytes)} bytes; the limit is ${formatBytes(this.config.max_content_bytes)} bytes. Shorten it or split it.`,
      );
      return;
    }
    show(this.composerError, false);
    this.input.value = "";
    this.imageUrl.value = "";
    this.toggleImageRow(false);
    this.shakeButton.setAttribute("aria-pressed", "false");
    this.autoGrow();
    this.updateCount();
    const item: Item = {
      msgid: 0n,
      clientMsgId: newClientMsgId(),
      mine: true,
      content,
      time: Date.now(),
      status: "pending",
      error: "",
      el: undefined,
    };
    conv.byClientId.set(item.clientMsgId, item);
    if (conv.lastTime < item.time) conv.lastTime = item.time;
    conv.preview = previewOf(content);
    conv.previewMine = true;
    this.renderMessages(conv);
    this.scrollToBottom();
    this.renderList();
    await this.deliver(conv, item);
  }

  /** Sends (or sends again, with the same client_msg_id: the server deduplicates) one item. */
  private async deliver(conv: Conv, item: Item): Promise<void> {
    item.status = "pending";
    item.error = "";
    this.renderItem(conv, item);
    try {
      const receipt = await this.client.send(conv.peer, item.content, { clientMsgId: item.clientMsgId });
      if (item.msgid === 0n) {
        item.msgid = receipt.msgid;
        item.time = receipt.senddateMs;
        conv.byMsgid.set(receipt.msgid, item);
      }
      if (item.status === "pending") item.status = conv.earlyDelivered.delete(receipt.msgid) ? "delivered" : "sent";
      if (receipt.msgid <= conv.peerReadUpto) item.status = "read";
      if (receipt.msgid > conv.lastMsgid) {
        conv.lastMsgid = receipt.msgid;
        conv.lastTime = Math.max(conv.lastTime, receipt.senddateMs);
      }
      this.saveLocalPeers();
      if (conv === this.open) this.renderMessages(conv);
    } catch (err) {
      item.status = "failed";
      item.error = errorText(err);
      if (conv === this.open) this.composerFail(`Not sent — ${item.error}`);
    }
    this.renderItem(conv, item);
    this.renderList();
  }

  private composerFail(message: string): void {
    this.composerError.textContent = message;
    show(this.composerError, true);
  }

  // ------------------------------------------------------------------ rendering

  /** Every item of the conversation in order (stored by msgid, then the ones on their way). */
  private ordered(conv: Conv): Item[] {
    const stored = [...conv.byMsgid.values()].sort((a, b) => (a.msgid < b.msgid ? -1 : a.msgid > b.msgid ? 1 : 0));
    const pending = [...conv.byClientId.values()].filter((i) => i.msgid === 0n).sort((a, b) => a.time - b.time);
    return [...stored, ...pending];
  }

  /** Puts the conversation's elements in order, with a day separator where the day changes. */
  private renderMessages(conv: Conv): void {
    const wanted: HTMLElement[] = [];
    let day = "";
    for (const item of this.ordered(conv)) {
      const d = formatDay(item.time);
      if (d !== day) {
        day = d;
        wanted.push(h("li", { class: "day", role: "separator", "data-day": d }, h("span", {}, d)));
      }
      wanted.push(this.renderItem(conv, item));
    }
    const existing = this.messages.children;
    for (let i = 0; i < wanted.length; i++) {
      const el = wanted[i]!;
      const at = existing[i];
      if (at === el) continue;
      if (el.classList.contains("day") && at?.classList.contains("day") && at.getAttribute("data-day") === el.getAttribute("data-day")) continue;
      this.messages.insertBefore(el, at ?? null);
    }
    while (this.messages.children.length > wanted.length) this.messages.lastElementChild?.remove();
    byId("history-status").hidden = false;
  }

  /** Builds an item's element once, then keeps its status up to date. */
  private renderItem(conv: Conv, item: Item): HTMLLIElement {
    let li = item.el;
    if (li === undefined) {
      const who = item.mine ? "You" : conv.peer.uid;
      const content = h("div", { class: "content" });
      switch (item.content.type) {
        case "text":
          content.textContent = item.content.text;
          break;
        case "rich": {
          const r = renderRich(item.content.markup);
          content.append(r.fragment);
          content.classList.add("rich");
          break;
        }
        case "business":
          content.append(h("span", { class: "unsupported" }, `Business message (type ${item.content.msgtype}, ${item.content.bytes.length} bytes)`));
          break;
        case "unknown":
          content.append(h("span", { class: "unsupported" }, "Unsupported message"));
          break;
      }
      const time = h("time", { class: "time" });
      const status = h("span", { class: "status" });
      li = h(
        "li",
        { class: `msg ${item.mine ? "mine" : "theirs"}` },
        h("div", { class: "bubble" }, h("span", { class: "sr-only" }, `${who}: `), content, h("div", { class: "meta" }, time, status)),
      );
      item.el = li;
    }
    li.dataset.status = item.status;
    li.dataset.clientMsgId = item.clientMsgId;
    if (item.msgid !== 0n) li.dataset.msgid = item.msgid.toString();
    const time = li.querySelector("time");
    if (time !== null) {
      time.textContent = formatTime(item.time);
      time.dateTime = new Date(item.time).toISOString();
      time.title = formatFull(item.time);
    }
    const status = li.querySelector<HTMLElement>(".status");
    if (status !== null) {
      const label: Record<Status, [string, string]> = {
        pending: ["◷", "Sending"],
        sent: ["✓", "Sent"],
        delivered: ["✓✓", "Delivered"],
        read: ["✓✓", "Read"],
        failed: ["!", "Not sent"],
        received: ["", ""],
      };
      const [mark, words] = label[item.status];
      status.textContent = mark;
      status.title = words;
      if (words === "") status.removeAttribute("aria-label");
      else status.setAttribute("aria-label", words);
    }
    li.querySelector(".failed")?.remove();
    if (item.status === "failed") {
      const retry = h("button", { type: "button", class: "link" }, "Retry");
      retry.addEventListener("click", () => void this.deliver(conv, item));
      li.append(h("div", { class: "failed" }, h("span", {}, `Not sent: ${item.error}`), " ", retry));
    }
    return li;
  }

  private setStatus(conv: Conv, item: Item, status: Status): void {
    item.status = status;
    if (item.el !== undefined || conv === this.open) this.renderItem(conv, item);
  }

  private renderTyping(): void {
    const el = byId("typing");
    const conv = this.open;
    const typing = conv !== undefined && conv.typingUntil > Date.now();
    el.textContent = typing ? `${conv.peer.uid} is typing…` : "";
    el.classList.toggle("on", typing);
  }

  private sortedConvs(): Conv[] {
    return [...this.convs.values()].sort((a, b) => b.lastTime - a.lastTime || (b.lastMsgid > a.lastMsgid ? 1 : -1));
  }

  private renderList(): void {
    const convs = this.sortedConvs();
    convs.forEach((conv, i) => {
      const li = this.renderListItem(conv);
      if (this.list.children[i] !== li) this.list.insertBefore(li, this.list.children[i] ?? null);
    });
    show(byId("list-empty"), convs.length === 0);
    this.updateTitle();
  }

  private renderListItem(conv: Conv): HTMLLIElement {
    let li = conv.li;
    if (li === undefined) {
      const avatar = h("span", { class: "avatar", "aria-hidden": "true" });
      paintAvatar(avatar, conv.key, conv.peer.uid);
      const button = h(
        "button",
        { type: "button", class: "conv-item" },
        avatar,
        h(
          "span",
          { class: "conv-main" },
          h("span", { class: "conv-top" }, h("span", { class: "conv-name" }, h("span", { class: "uid" }, conv.peer.uid), h("span", { class: "appcode" }, ` · ${conv.peer.appcode}`)), h("span", { class: "conv-time" })),
          h("span", { class: "conv-bottom" }, h("span", { class: "conv-preview" }), h("span", { class: "badge", hidden: true })),
        ),
      );
      button.addEventListener("click", () => this.openConv(conv, true));
      li = h("li", { "data-peer": conv.key }, button);
      conv.li = li;
    }
    const button = li.firstElementChild as HTMLButtonElement;
    const current = conv === this.open;
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
    const typing = conv.typingUntil > Date.now();
    const preview = li.querySelector<HTMLElement>(".conv-preview")!;
    preview.textContent = typing ? "typing…" : conv.preview === "" ? "No messages yet" : `${conv.previewMine ? "You: " : ""}${conv.preview}`;
    preview.classList.toggle("typing", typing);
    li.querySelector<HTMLElement>(".conv-time")!.textContent = conv.lastTime > 0 && conv.preview !== "" ? formatListTime(conv.lastTime) : "";
    const badge = li.querySelector<HTMLElement>(".badge")!;
    badge.textContent = conv.unread > 999 ? "999+" : String(conv.unread);
    badge.hidden = conv.unread === 0;
    li.dataset.unread = String(conv.unread);
    button.setAttribute(
      "aria-label",
      `${conv.peer.uid}, appcode ${conv.peer.appcode}${conv.unread > 0 ? `, ${conv.unread} unread` : ""}${conv.preview !== "" ? `: ${preview.textContent}` : ""}`,
    );
    li.classList.toggle("unread", conv.unread > 0);
    return li;
  }

  /** Up/Down/Home/End move between conversations. */
  private listKeys(e: KeyboardEvent): void {
    const buttons = [...this.list.querySelectorAll<HTMLButtonElement>("button.conv-item")];
    const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
    if (at < 0) return;
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: buttons.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    buttons[Math.max(0, Math.min(buttons.length - 1, to))]?.focus();
  }

  private updateTitle(): void {
    const unread = [...this.convs.values()].reduce((n, c) => n + c.unread, 0);
    const base = this.open !== undefined ? `${this.open.peer.uid} — longlink chat` : "longlink chat";
    document.title = unread > 0 ? `(${unread}) ${base}` : base;
  }

  private updateCount(): void {
    const bytes = encoder.encode(this.input.value).length;
    const limit = this.config.max_content_bytes;
    // Quiet until the message gets long; then the bytes left, in red once over.
    this.count.textContent = bytes > limit * 0.8 ? `${formatBytes(bytes)} / ${formatBytes(limit)} bytes` : "";
    this.count.classList.toggle("over", bytes > limit);
  }

  private autoGrow(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 180)}px`;
  }

  private toggleImageRow(open: boolean): void {
    show(this.imageRow, open);
    this.imageButton.setAttribute("aria-expanded", String(open));
    if (open) this.imageUrl.focus();
    else if (document.activeElement === this.imageUrl) this.input.focus();
  }

  private nearBottom(): boolean {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  private scrollToBottom(): void {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  private shake(): void {
    const pane = byId("conv-pane");
    pane.classList.remove("shaking");
    void pane.offsetWidth; // restart the animation
    pane.classList.add("shaking");
    pane.addEventListener("animationend", () => pane.classList.remove("shaking"), { once: true });
  }

  private peerFromHash(): UserRef | undefined {
    const m = /^#with=(.+)$/.exec(location.hash);
    if (m === null) return undefined;
    try {
      return parseUserRef(decodeURIComponent(m[1]!));
    } catch {
      return undefined;
    }
  }

  // ------------------------------------------------------------------ local list, sign out

  /** Peers seen in this browser, for a server without CONVERSATIONS and for empty new chats. */
  private restoreLocalPeers(): void {
    try {
      const saved = JSON.parse(localStorage.getItem(this.peersKey) ?? "[]") as { key: string; preview: string; time: number; mine: boolean }[];
      for (const p of saved.slice(0, 200)) {
        const conv = this.ensureConv(parseUserRef(p.key));
        conv.preview = p.preview;
        conv.previewMine = p.mine;
        conv.lastTime = p.time;
      }
    } catch {
      localStorage.removeItem(this.peersKey);
    }
  }

  private saveLocalPeers(): void {
    const peers = this.sortedConvs()
      .slice(0, 200)
      .map((c) => ({ key: c.key, preview: c.preview.slice(0, 120), time: c.lastTime, mine: c.previewMine }));
    try {
      localStorage.setItem(this.peersKey, JSON.stringify(peers));
    } catch {
      /* storage full or off: the list is rebuilt from the server */
    }
  }

  private async logout(): Promise<void> {
    try {
      await this.client.logout();
    } catch {
      /* closed either way */
    }
    this.signOut("");
  }

  private signOut(message: string): void {
    for (const off of this.unsubscribe.splice(0)) off();
    this.client.close();
    history.replaceState(null, "", location.pathname);
    this.onSignedOut(message);
  }
}
