// c2c with the Rust side (the `longlink client` CLI over the TCP gate), offline pull by cursor
// and history paging.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../dist/index.js";
import { startServer, waitFor, record, uniq, parseJsonLine } from "./helpers.mjs";

let server;
const clients = [];
const listeners = [];

before(async () => {
  server = await startServer({ name: "c2c" });
});

after(async () => {
  for (const c of clients) c.close();
  for (const l of listeners) l.kill();
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

/** `longlink client send --json`: one JSON line per acknowledged message. */
async function cliSend(from, to, text, extra = []) {
  const out = await server.cli([
    "send",
    "--json",
    "--appcode",
    String(from.appcode),
    "--uid",
    from.uid,
    "--to",
    `${to.appcode}:${to.uid}`,
    ...extra,
    text,
  ]);
  return out
    .split("\n")
    .filter((l) => l.trim())
    .map(parseJsonLine);
}

test("c2c: TS → Rust CLI listener, and Rust CLI → TS (pushed, acknowledged)", async () => {
  const alice = await client(129, uniq("alice"));
  await alice.client.connect();
  const bob = { appcode: 130, uid: uniq("bob") };
  const listener = server.listen(["--appcode", "130", "--uid", bob.uid, "--count", "1", "--timeout-secs", "20"]);
  listeners.push(listener);
  // The listener is online once its session shows in presence.
  await waitFor(async () => {
    const p = await fetch(`${server.api}/v1/presence/130/${bob.uid}`, {
      headers: { authorization: "Bearer dev-api-key-change-me" },
    }).then((r) => r.json());
    return p.online;
  }, "the CLI listener online");

  const sent = await alice.client.sendText(bob, "hello from TypeScript");
  assert.equal(sent.duplicate, false);
  await waitFor(() => listener.lines.length >= 1, "the CLI listener printing the message");
  const got = listener.lines[0];
  assert.equal(got.msgid, sent.msgid.toString());
  assert.equal(got.content, "hello from TypeScript");
  assert.equal(got.from_uid, alice.user.uid);
  assert.equal(got.client_msg_id, sent.clientMsgId);

  // And back: the CLI sends, the TS client gets a `message` event and acks it.
  const [reply] = await cliSend(bob, alice.user, "hello from Rust");
  await waitFor(() => alice.rec.messages.length >= 1, "the reply at alice");
  const m = alice.rec.messages[0];
  assert.equal(m.msgid.toString(), reply.msgid);
  assert.deepEqual(m.content, { type: "text", text: "hello from Rust" });
  assert.deepEqual(m.from, bob);
  assert.equal(m.fromDevice, "cli-send");
  // Acknowledged: this device's inbox is empty (a pull would return it otherwise).
  await waitFor(async () => (await alice.client.pullOffline()).messages.length === 0, "alice's ack of the reply");
  assert.equal(alice.rec.messages.length, 1, "the message was emitted once");
});

test("offline pull: 120 messages to an offline user come in pages of 50/50/20 by cursor", async () => {
  const sender = { appcode: 129, uid: uniq("sender") };
  const bob = await client(129, uniq("bob"), { autoAck: false });
  // Sent while bob is offline (never logged in): they wait in bob's inbox.
  const sent = await cliSend(sender, bob.user, "offline", ["--count", "120"]);
  assert.equal(sent.length, 120);
  const sentIds = sent.map((s) => BigInt(s.msgid));

  await bob.client.connect();
  const pages = [];
  let cursor = 0n;
  for (;;) {
    const page = await bob.client.pullOffline(cursor, 50);
    pages.push(page);
    if (!page.more) break;
    assert.ok(page.nextCursor > cursor, "the cursor moves forward");
    cursor = page.nextCursor;
    assert.ok(pages.length < 10, "paging ends");
  }
  assert.deepEqual(
    pages.map((p) => p.messages.length),
    [50, 50, 20],
  );
  const pulled = pages.flatMap((p) => p.messages.map((m) => m.msgid));
  assert.deepEqual(pulled, sentIds, "every message once, ascending by msgid");
  assert.equal(pages[0].nextCursor, pulled[49]);
  assert.deepEqual(pages[2].messages.at(-1).content, { type: "text", text: "offline 120" });

  // The login redelivery and the SDK's own catch-up emit each message once as an event too.
  await waitFor(() => bob.rec.messages.length >= 120, "120 message events");
  assert.equal(new Set(bob.rec.messages.map((m) => m.msgid)).size, 120);
  assert.equal(bob.rec.messages.length, 120);

  // autoAck: false acknowledged nothing; ack() does.
  assert.equal((await bob.client.pullOffline(0n, 500)).messages.length, 120);
  bob.client.ack(sentIds);
  await waitFor(async () => (await bob.client.pullOffline(0n, 500)).messages.length === 0, "the inbox acknowledged");
});

test("history: pages both ways by cursor, newest first for older", async () => {
  const alice = await client(129, uniq("alice"));
  const bob = await client(129, uniq("bob"));
  await alice.client.connect();
  await bob.client.connect();
  const ids = [];
  for (let i = 1; i <= 7; i += 1) {
    const from = i % 2 ? alice : bob;
    const to = i % 2 ? bob : alice;
    ids.push((await from.client.sendText(to.user, `h${i}`)).msgid);
  }
  const older = [];
  let cursor = 0n;
  for (;;) {
    const page = await alice.client.history(bob.user, { cursor, pageSize: 3 });
    older.push(page.messages.map((m) => m.msgid));
    if (!page.more) break;
    cursor = page.nextCursor;
  }
  assert.deepEqual(
    older.map((p) => p.length),
    [3, 3, 1],
  );
  assert.deepEqual(older.flat(), [...ids].reverse());

  const newer = await bob.client.history(alice.user, { direction: "newer", cursor: ids[2], pageSize: 50 });
  assert.deepEqual(
    newer.messages.map((m) => m.msgid),
    ids.slice(3),
  );
  assert.equal(newer.more, false);
  assert.deepEqual(newer.messages[0].content, { type: "text", text: "h4" });
  assert.deepEqual(newer.messages[0].from, bob.user);
});
