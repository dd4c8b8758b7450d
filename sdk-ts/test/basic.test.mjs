// Login, errors, typed content, typing, c2s, keepalive, timeouts, kicks, logout — against a real
// `longlink serve`, over its WebSocket listener.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client, LonglinkError, newClientMsgId, parseUserRef, userKey } from "../dist/index.js";
import { startServer, startProxy, waitFor, nextEvent, record, uniq } from "./helpers.mjs";

let server;
const clients = [];

before(async () => {
  server = await startServer({ name: "basic" });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

async function connect(appcode, uid, extra = {}) {
  const client = new Client({
    url: server.wsUrl,
    appcode,
    token: await server.token(appcode, uid),
    deviceId: extra.deviceId ?? `web-${uid}`,
    requestTimeoutMs: 5000,
    ...extra,
  });
  clients.push(client);
  const rec = record(client);
  await client.connect();
  return { client, rec, user: { appcode, uid } };
}

test("ids: userKey, parseUserRef, newClientMsgId", () => {
  assert.equal(userKey({ appcode: 129, uid: "alice" }), "129:alice");
  assert.deepEqual(parseUserRef("130:bob:x"), { appcode: 130, uid: "bob:x" });
  assert.throws(() => parseUserRef("bob"), TypeError);
  const a = newClientMsgId();
  assert.match(a, /^[A-Za-z0-9_-]{22}$/);
  assert.notEqual(a, newClientMsgId());
});

test("login: state events, uid and session id from the LOGIN answer", async () => {
  const uid = uniq("alice");
  const client = new Client({ url: server.wsUrl, appcode: 129, token: await server.token(129, uid), deviceId: "d1" });
  clients.push(client);
  const rec = record(client);
  assert.equal(client.uid, "");
  await client.connect();
  assert.equal(client.state, "connected");
  assert.equal(client.uid, uid);
  assert.ok(client.sessionId > 0n, "session id is a non-zero bigint");
  assert.deepEqual(rec.states, [{ state: "connecting" }, { state: "connected", resumed: false }]);
  const serverTime = await client.keepalive();
  assert.ok(Math.abs(serverTime - Date.now()) < 60_000, "keepalive answers the server clock");
  client.close();
  assert.equal(client.state, "closed");
  assert.deepEqual(rec.states.at(-1), { state: "closed" });
  await assert.rejects(client.keepalive(), (e) => e instanceof LonglinkError && e.code === "CLOSED");
});

test("login: a bad token rejects with LonglinkError BAD_TOKEN and closes the client", async () => {
  const client = new Client({ url: server.wsUrl, appcode: 129, token: "not-a-jwt", deviceId: "d1" });
  const rec = record(client);
  await assert.rejects(client.connect(), (e) => {
    assert.ok(e instanceof LonglinkError);
    assert.equal(e.code, "BAD_TOKEN");
    assert.ok(e.logId > 0n, "the ERROR's log_id is carried");
    return true;
  });
  assert.equal(client.state, "closed");
  assert.equal(rec.states.at(-1).state, "closed");
  assert.equal(rec.states.at(-1).error.code, "BAD_TOKEN");
});

test("login: a token of another appcode is APPCODE_MISMATCH; an unreachable gate is NETWORK", async () => {
  const token = await server.token(130, uniq("x"));
  await assert.rejects(
    Client.connect({ url: server.wsUrl, appcode: 129, token, deviceId: "d" }),
    (e) => e instanceof LonglinkError && e.code === "APPCODE_MISMATCH",
  );
  const proxy = await startProxy(server.wsAddr);
  proxy.blocked = true;
  await assert.rejects(
    Client.connect({ url: proxy.url, appcode: 129, token, deviceId: "d" }),
    (e) => e instanceof LonglinkError && e.code === "NETWORK",
  );
  await proxy.close();
});

test("login: a token function is asked for the LOGIN", async () => {
  const uid = uniq("fn");
  let asked = 0;
  const { client } = await connect(129, uid, {
    token: async () => {
      asked += 1;
      return server.token(129, uid);
    },
  });
  assert.equal(asked, 1);
  assert.equal(client.uid, uid);
});

test("content: text, rich, business and unknown types arrive typed", async () => {
  const a = await connect(129, uniq("a"));
  const b = await connect(131, uniq("b"));
  const contents = [
    { type: "text", text: "héllo ✓" },
    { type: "rich", markup: '<font size="12" color="red">hi</font><img url="https://pic.example/1.jpg" /><shake />' },
    { type: "business", msgtype: 42, bytes: new Uint8Array([0, 1, 2, 255]) },
    { type: "unknown", contentType: 99, msgtype: 7, bytes: new Uint8Array([9, 9]) },
  ];
  const receipts = [];
  for (const content of contents) receipts.push(await a.client.send(b.user, content));
  await waitFor(() => b.rec.messages.length >= 4, "4 messages at b");
  assert.deepEqual(
    b.rec.messages.map((m) => m.content),
    contents,
  );
  for (const [i, m] of b.rec.messages.entries()) {
    assert.equal(m.msgid, receipts[i].msgid);
    assert.equal(m.clientMsgId, receipts[i].clientMsgId);
    assert.deepEqual(m.from, a.user);
    assert.deepEqual(m.to, b.user);
    assert.equal(m.kind, "c2c");
    assert.equal(m.fromDevice, `web-${a.user.uid}`);
  }
  // All four (the unknown one too) are acknowledged: nothing is left to pull.
  await waitFor(async () => (await b.client.pullOffline()).messages.length === 0, "b's inbox acknowledged");
  assert.deepEqual(b.rec.errors, []);
});

test("typing: the peer gets a typing event, no message; the sender gets no error", async () => {
  const a = await connect(129, uniq("typer"));
  const b = await connect(129, uniq("watcher"));
  const [typing] = await Promise.all([nextEvent(b.client, "typing"), Promise.resolve(a.client.typing(b.user))]);
  assert.deepEqual(typing[0], { from: a.user, fromDevice: `web-${a.user.uid}` });
  // A round trip on both sides after the typing: still no message and no error anywhere.
  await a.client.keepalive();
  await b.client.keepalive();
  assert.equal(b.rec.messages.length, 0);
  assert.deepEqual(a.rec.errors, []);
  assert.deepEqual(b.rec.errors, []);
  assert.equal((await b.client.history(a.user)).messages.length, 0, "TYPING is never stored");
});

test("c2s: the topic comes back and a business server consumes the payload over HTTP", async () => {
  const a = await connect(130, uniq("driver"));
  const payload = new TextEncoder().encode("31.2,121.5");
  const { topic } = await a.client.c2s(7, payload, { clientMsgId: "gps-1" });
  assert.equal(topic, "c2s.130.7");
  const res = await fetch(`${server.api}/v1/consume?topic=${topic}&max=10&wait_secs=5`, {
    headers: { authorization: "Bearer dev-api-key-change-me" },
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  const mine = body.messages.filter((m) => m.uid === a.user.uid);
  assert.equal(mine.length, 1);
  assert.equal(mine[0].body, "31.2,121.5");
  assert.equal(mine[0].client_msg_id, "gps-1");
  assert.equal(mine[0].msgtype, 7);
});

test("errors: a request error is a LonglinkError with the ErrorCode name", async () => {
  const a = await connect(129, uniq("err"));
  await assert.rejects(
    a.client.sendText({ appcode: 999, uid: "nobody" }, "x"),
    (e) => e instanceof LonglinkError && e.code === "UNKNOWN_RECEIVER_APPCODE",
  );
  await assert.rejects(
    a.client.history({ appcode: 129, uid: "" }),
    (e) => e instanceof LonglinkError && e.code === "INVALID_ARGUMENT",
  );
  assert.equal(a.client.state, "connected", "request errors leave the connection up");
});

test("oversized: a body over maxBodyBytes is refused with BODY_TOO_LARGE before it is sent; the link stays", async () => {
  const a = await connect(129, uniq("big"));
  const b = await connect(130, uniq("big-peer"));
  const states = [];
  a.client.on("state", (s) => states.push(s));
  await assert.rejects(
    a.client.sendText(b.user, "x".repeat(70_000)),
    (e) => e instanceof LonglinkError && e.code === "BODY_TOO_LARGE" && /70\d{3} bytes/.test(e.message),
  );
  assert.equal(a.client.state, "connected");
  assert.deepEqual(states, [], "no reconnect: nothing was sent");
  // The same client still sends, and the server's own content limit answers a body that fits
  // the frame but not the content limit.
  const ok = await a.client.sendText(b.user, "small again");
  assert.ok(ok.msgid > 0n);
  await assert.rejects(
    a.client.sendText(b.user, "y".repeat(63_000)),
    (e) => e instanceof LonglinkError && e.code === "INVALID_ARGUMENT",
  );
  assert.equal(a.client.state, "connected");
});

test("timeout: a request without an answer rejects TIMEOUT within requestTimeoutMs", async () => {
  const uid = uniq("slow");
  const proxy = await startProxy(server.wsAddr);
  try {
    const client = new Client({
      url: proxy.url,
      appcode: 129,
      token: await server.token(129, uid),
      deviceId: "d",
      requestTimeoutMs: 400,
    });
    clients.push(client);
    await client.connect();
    proxy.swallowDown = true; // the server answers, the answer never arrives
    const started = Date.now();
    await assert.rejects(client.keepalive(), (e) => e instanceof LonglinkError && e.code === "TIMEOUT");
    const took = Date.now() - started;
    assert.ok(took >= 350 && took < 2000, `settled after ${took} ms`);
    client.close();
  } finally {
    await proxy.close();
  }
});

test("kick: a newer login of the same device ends the older client (kicked REPLACED, closed)", async () => {
  const uid = uniq("twice");
  const first = await connect(129, uid, { deviceId: "same" });
  const kicked = nextEvent(first.client, "kicked");
  const closed = nextEvent(first.client, "state", (s) => s === "closed");
  const second = await connect(129, uid, { deviceId: "same" });
  const [kick] = await kicked;
  assert.equal(kick.reason, "REPLACED");
  assert.equal(kick.byDeviceId, "same");
  const [, detail] = await closed;
  assert.equal(detail.error.code, "KICKED");
  assert.equal(first.client.state, "closed");
  assert.ok(!first.rec.states.some((s) => s.state === "reconnecting"), "no reconnect after REPLACED");
  assert.equal(second.client.state, "connected");
  await assert.rejects(first.client.sendText(second.user, "x"), (e) => e.code === "CLOSED");
});

test("logout: ends the session (no hold), state closed", async () => {
  const presence = (uid) =>
    fetch(`${server.api}/v1/presence/129/${uid}`, {
      headers: { authorization: "Bearer dev-api-key-change-me" },
    }).then((r) => r.json());
  const a = await connect(129, uniq("bye"));
  assert.equal((await presence(a.user.uid)).online, true);
  await a.client.logout();
  assert.equal(a.client.state, "closed");
  assert.deepEqual(a.rec.states.at(-1), { state: "closed" });
  await waitFor(async () => (await presence(a.user.uid)).online === false, "the session gone from presence");
  // Unlike close(): the session is held for a RESUME and stays in presence.
  const b = await connect(129, uniq("held"));
  b.client.close();
  await b.client.keepalive().catch(() => {});
  assert.equal((await presence(b.user.uid)).online, true);
});
