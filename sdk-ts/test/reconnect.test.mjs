// Cut links: a send whose answer is lost is retried with the same client_msg_id (duplicate,
// same msgid, received once); RESUME within the hold delivers what was sent meanwhile exactly
// once; a restarted server (drained: KICK RECONNECT) rejects the RESUME, so the client logs in again and pulls.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../dist/index.js";
import { startServer, startProxy, waitFor, nextEvent, record, uniq, parseJsonLine } from "./helpers.mjs";

let server;
const clients = [];
const proxies = [];

before(async () => {
  server = await startServer({ name: "reconnect" });
});

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  await server?.stop();
});

async function client(appcode, uid, extra = {}) {
  const c = new Client({
    url: server.wsUrl,
    appcode,
    token: await server.token(appcode, uid),
    deviceId: `web-${uid}`,
    requestTimeoutMs: 5000,
    ...extra,
  });
  clients.push(c);
  return { client: c, rec: record(c), user: { appcode, uid } };
}

async function proxy() {
  const p = await startProxy(server.wsAddr);
  proxies.push(p);
  return p;
}

async function cliSend(from, to, text, extra = [], timeoutMs = 20_000) {
  const out = await server.cli(
    ["send", "--json", "--appcode", String(from.appcode), "--uid", from.uid, "--to", `${to.appcode}:${to.uid}`, ...extra, text],
    timeoutMs,
  );
  return out
    .split("\n")
    .filter((l) => l.trim())
    .map(parseJsonLine);
}

const count = (messages, msgid) => messages.filter((m) => m.msgid === msgid).length;

test("retry: a send whose answer is lost with the link is retried with the same client_msg_id, received once", async () => {
  const link = await proxy();
  const alice = await client(129, uniq("alice"), { url: link.url });
  const bob = await client(129, uniq("bob"));
  await alice.client.connect();
  await bob.client.connect();

  link.swallowDown = true; // the C2C reaches the server; its answer is lost
  const sending = alice.client.sendText(bob.user, "exactly once", { clientMsgId: "retry-1" });
  await waitFor(() => bob.rec.messages.some((m) => m.clientMsgId === "retry-1"), "the message stored and pushed to bob");
  const first = bob.rec.messages.find((m) => m.clientMsgId === "retry-1");
  assert.equal(alice.client.state, "connected", "alice has not noticed anything yet");

  link.swallowDown = false;
  link.cut(); // the link dies with the answer unread
  const receipt = await sending;
  assert.equal(receipt.duplicate, true, "the retry was answered as a duplicate");
  assert.equal(receipt.msgid, first.msgid, "the retried send reports the stored msgid");
  assert.equal(receipt.clientMsgId, "retry-1");
  assert.ok(link.accepted >= 2, "alice reconnected through the proxy");
  assert.ok(alice.rec.states.some((s) => s.state === "reconnecting"));
  assert.deepEqual(alice.rec.states.at(-1), { state: "connected", resumed: true });

  // The server pushes a retried message again (§7.2); bob's queue holds that push before the
  // answer to this round trip, so after it bob has seen everything there is to see.
  await bob.client.keepalive();
  assert.equal(count(bob.rec.messages, first.msgid), 1, "bob got the message once");
  const history = await bob.client.history(alice.user);
  assert.equal(history.messages.length, 1, "one message stored");
});

test("resume: messages sent while the link is down arrive exactly once after RESUME", async () => {
  const link = await proxy();
  const alice = await client(129, uniq("alice"), { url: link.url });
  await alice.client.connect();
  const bob = { appcode: 130, uid: uniq("bob") };
  const [before] = await cliSend(bob, alice.user, "before the cut");
  await waitFor(() => alice.rec.messages.length === 1, "the first message");

  link.blocked = true;
  link.cut();
  await waitFor(() => alice.client.state === "reconnecting", "state reconnecting");
  // Sent meanwhile: alice's session is held, they wait in her inbox.
  const meanwhile = await cliSend(bob, alice.user, "meanwhile", ["--count", "3"]);
  // A send issued while reconnecting waits for the connection and goes out after it.
  const sending = alice.client.sendText(bob, "queued while down");
  const resumed = nextEvent(alice.client, "state", (s) => s === "connected");
  link.blocked = false;
  const [, detail] = await resumed;
  assert.deepEqual(detail, { resumed: true });
  const receipt = await sending;
  assert.equal(receipt.duplicate, false);

  const expected = [before, ...meanwhile].map((s) => BigInt(s.msgid));
  await waitFor(() => alice.rec.messages.length >= 4, "the 3 messages sent meanwhile");
  await alice.client.keepalive(); // anything still in flight would have arrived by now
  assert.deepEqual(
    alice.rec.messages.map((m) => m.msgid),
    expected,
    "each message exactly once, in order",
  );
  assert.deepEqual(alice.rec.messages.slice(1).map((m) => m.content.text), ["meanwhile 1", "meanwhile 2", "meanwhile 3"]);
  await waitFor(async () => (await alice.client.pullOffline()).messages.length === 0, "all acknowledged");
  assert.deepEqual(alice.rec.errors, []);
});

test("restart: the draining server's KICK RECONNECT, RESUME rejected by the new process, LOGIN with prior_epoch, catch-up pull", async () => {
  const link = await proxy();
  let tokens = 0;
  const uid = uniq("alice");
  const alice = await client(129, uid, {
    url: link.url,
    token: async () => {
      tokens += 1;
      return server.token(129, uid);
    },
  });
  await alice.client.connect();
  const bob = { appcode: 129, uid: uniq("bob") };

  link.blocked = true; // keep alice away until the messages wait for her
  const reconnecting = nextEvent(alice.client, "state", (s) => s === "reconnecting");
  await server.restart();
  const [, dropped] = await reconnecting;
  // SIGTERM drains the gate: KICK RECONNECT with a backoff, then the close (§6.6).
  assert.match(dropped.error.message, /kicked: RECONNECT/);
  link.target = server.wsAddr;
  const sent = await cliSend(bob, alice.user, "after restart", ["--count", "5"]);
  const back = nextEvent(alice.client, "state", (s) => s === "connected", 20_000);
  link.blocked = false;
  const [, detail] = await back;
  assert.deepEqual(detail, { resumed: false }, "a new process cannot resume: a fresh LOGIN");
  assert.equal(tokens, 2, "the token function was asked again for the new LOGIN");
  await waitFor(() => alice.rec.messages.length >= 5, "the 5 messages after the new login");
  await alice.client.keepalive();
  assert.deepEqual(
    alice.rec.messages.map((m) => m.msgid),
    sent.map((s) => BigInt(s.msgid)),
    "each once (redelivery and the catch-up pull deduplicated)",
  );
  await waitFor(async () => (await alice.client.pullOffline()).messages.length === 0, "all acknowledged");
});

test("resume: more than one RESUME answer holds (gap_free false) → the rest is pulled, each once", async () => {
  const link = await proxy();
  const alice = await client(129, uniq("alice"), { url: link.url });
  await alice.client.connect();
  const bob = { appcode: 130, uid: uniq("bob") };
  link.blocked = true;
  link.cut();
  await waitFor(() => alice.client.state === "reconnecting", "state reconnecting");
  // A RESUME answer carries at most 500 messages (§5.4): 600 cannot be gap-free.
  const sent = await cliSend(bob, alice.user, "bulk", ["--count", "600"], 60_000);
  assert.equal(sent.length, 600);
  const back = nextEvent(alice.client, "state", (s) => s === "connected", 20_000);
  link.blocked = false;
  assert.deepEqual((await back)[1], { resumed: true });
  await waitFor(() => alice.rec.messages.length >= 600, "600 messages", 20_000);
  await alice.client.keepalive();
  assert.deepEqual(
    alice.rec.messages.map((m) => m.msgid),
    sent.map((s) => BigInt(s.msgid)),
    "each once, in msgid order",
  );
  await waitFor(async () => (await alice.client.pullOffline()).messages.length === 0, "all acknowledged");
});

test("timeout: while the link stays down, requests settle by their deadline (send: 3 × requestTimeoutMs)", async () => {
  const link = await proxy();
  const alice = await client(129, uniq("alice"), { url: link.url, requestTimeoutMs: 300 });
  await alice.client.connect();
  link.blocked = true;
  link.cut();
  await waitFor(() => alice.client.state === "reconnecting", "state reconnecting");
  const t0 = Date.now();
  const results = await Promise.allSettled([
    alice.client.sendText({ appcode: 129, uid: "nobody" }, "never"),
    alice.client.history({ appcode: 129, uid: "nobody" }),
  ]);
  const took = Date.now() - t0;
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.equal(r.reason.code, "TIMEOUT");
  }
  assert.ok(took >= 850 && took < 2000, `settled after ${took} ms`);
  assert.equal(alice.client.state, "reconnecting", "still trying");
  alice.client.close();
  assert.equal(alice.client.state, "closed");
});

test("SESSION_REPLACED: a newer login of the same class while the link was down ends the client", async () => {
  const link = await proxy();
  const uid = uniq("alice");
  const older = await client(129, uid, { url: link.url, deviceId: "tab-1" });
  await older.client.connect();
  link.blocked = true;
  link.cut();
  await waitFor(() => older.client.state === "reconnecting", "state reconnecting");
  // Another tab (device class "web" too) logs in: under the default `kick` policy it replaces
  // the held session. The older one must not take it back.
  const newer = await client(129, uid, { deviceId: "tab-2" });
  await newer.client.connect();
  const closed = nextEvent(older.client, "state", (s) => s === "closed", 15_000);
  link.blocked = false;
  const [, detail] = await closed;
  assert.equal(detail.error.code, "SESSION_REPLACED");
  assert.equal(newer.client.state, "connected");
  await newer.client.keepalive();
  assert.equal(newer.client.state, "connected", "the newer session was not kicked");
  assert.deepEqual(newer.rec.kicked, []);
});
