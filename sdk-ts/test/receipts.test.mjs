// RECEIPT pushes (cmd 22), CONVERSATIONS (cmd 23), MARK_READ (cmd 24) and Msg.delivered.
// These commands are in proto/longlink.proto before the server serves them: a server that
// answers UNKNOWN_CMD makes these tests SKIP (with that reason), never pass.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client, LonglinkError } from "../dist/index.js";
import { startServer, waitFor, record, uniq } from "./helpers.mjs";

let server;
const clients = [];

before(async () => {
  server = await startServer({ name: "receipts" });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

async function client(appcode, uid) {
  const c = new Client({ url: server.wsUrl, appcode, token: await server.token(appcode, uid), deviceId: `web-${uid}`, requestTimeoutMs: 5000 });
  clients.push(c);
  const rec = record(c);
  await c.connect();
  return { client: c, rec, user: { appcode, uid } };
}

/** true when the server answers the command; false (→ skip) when it says UNKNOWN_CMD. */
async function served(call) {
  try {
    await call();
    return true;
  } catch (err) {
    if (err instanceof LonglinkError && err.code === "UNKNOWN_CMD") return false;
    throw err;
  }
}

const NOT_SERVED = "the server answers UNKNOWN_CMD: CONVERSATIONS/MARK_READ/RECEIPT are not served by this build yet";

test("receipts: DELIVERED when the receiver acks, Msg.delivered in history", async (t) => {
  const alice = await client(129, uniq("alice"));
  const bob = await client(129, uniq("bob"));
  if (!(await served(() => alice.client.conversations()))) {
    t.skip(NOT_SERVED);
    return;
  }
  const ids = [];
  for (const text of ["r1", "r2", "r3"]) ids.push((await alice.client.sendText(bob.user, text)).msgid);
  // bob's SDK acks each message after its listeners ran; alice hears of it live.
  await waitFor(() => bob.rec.messages.length === 3, "bob got 3");
  await waitFor(
    () => new Set(alice.rec.receipts.filter((r) => r.kind === "delivered").flatMap((r) => r.msgids)).size === 3,
    "3 msgids reported delivered to alice",
  );
  const delivered = alice.rec.receipts.filter((r) => r.kind === "delivered");
  for (const r of delivered) {
    assert.deepEqual(r.by, bob.user);
    assert.equal(r.byDevice, `web-${bob.user.uid}`);
  }
  assert.deepEqual([...new Set(delivered.flatMap((r) => r.msgids))].sort(), [...ids].sort());
  const history = await alice.client.history(bob.user, { direction: "newer" });
  assert.deepEqual(
    history.messages.map((m) => [m.msgid, m.delivered]),
    ids.map((id) => [id, true]),
  );
});

test("conversations and markRead: unread counts, read marks, RECEIPT READ to the peer", async (t) => {
  const alice = await client(129, uniq("alice"));
  const bob = await client(129, uniq("bob"));
  const carol = await client(130, uniq("carol"));
  if (!(await served(() => bob.client.conversations()))) {
    t.skip(NOT_SERVED);
    return;
  }
  const fromAlice = [];
  for (const text of ["c1", "c2", "c3"]) fromAlice.push((await alice.client.sendText(bob.user, text)).msgid);
  const fromCarol = (await carol.client.sendText(bob.user, "hi")).msgid;

  const list = await bob.client.conversations();
  assert.equal(list.more, false);
  assert.deepEqual(
    list.conversations.map((c) => c.with),
    [carol.user, alice.user],
    "most recent first",
  );
  const withAlice = list.conversations[1];
  assert.equal(withAlice.unread, 3);
  assert.equal(withAlice.readUpto, 0n);
  assert.equal(withAlice.last.msgid, fromAlice[2]);
  assert.deepEqual(withAlice.last.content, { type: "text", text: "c3" });
  assert.equal(list.conversations[0].last.msgid, fromCarol);

  const page = await bob.client.conversations({ limit: 1 });
  assert.equal(page.conversations.length, 1);
  assert.equal(page.more, true);
  const next = await bob.client.conversations({ limit: 1, beforeMsgid: page.conversations[0].last.msgid });
  assert.deepEqual(next.conversations[0].with, alice.user);

  const marked = await bob.client.markRead(alice.user, fromAlice[1]);
  assert.deepEqual(marked, { readUpto: fromAlice[1], unread: 1 });
  await waitFor(() => alice.rec.receipts.some((r) => r.kind === "read"), "RECEIPT READ at alice");
  const read = alice.rec.receipts.find((r) => r.kind === "read");
  assert.deepEqual(read.by, bob.user);
  assert.equal(read.readUpto, fromAlice[1]);
  // Read marks only move forward.
  assert.deepEqual(await bob.client.markRead(alice.user, fromAlice[0]), { readUpto: fromAlice[1], unread: 1 });
  const aliceView = await alice.client.conversations();
  assert.equal(aliceView.conversations[0].peerReadUpto, fromAlice[1]);
});
