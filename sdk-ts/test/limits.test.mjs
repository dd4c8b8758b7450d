// Server advice: the keepalive interval of the LOGIN answer keeps the session past the idle
// timeout; a link that answers nothing is given up after 3 intervals; RATE_LIMITED sends are
// retried after retry_after_ms; a revoked user is kicked LOGGED_OUT for good.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../dist/index.js";
import { startServer, startProxy, waitFor, nextEvent, record, uniq } from "./helpers.mjs";

let server;
const clients = [];
const proxies = [];

before(async () => {
  server = await startServer({
    name: "limits",
    gate: ["keepalive_interval_secs = 1", "idle_timeout_secs = 2", "send_frames_per_sec = 2", "send_frames_burst = 2"].join("\n"),
  });
});

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  await server?.stop();
});

async function client(appcode, uid, extra = {}) {
  const c = new Client({ url: server.wsUrl, appcode, token: await server.token(appcode, uid), deviceId: `web-${uid}`, requestTimeoutMs: 5000, ...extra });
  clients.push(c);
  return { client: c, rec: record(c), user: { appcode, uid } };
}

/** A proxy that also counts the WebSocket messages the client sends (one TCP chunk each here). */
async function countingProxy() {
  const p = await startProxy(server.wsAddr);
  proxies.push(p);
  return p;
}

test("keepalive: KEEPALIVE every keepalive_interval_secs keeps the session past the idle timeout", async () => {
  const link = await countingProxy();
  const a = await client(129, uniq("idle"), { url: link.url });
  await a.client.connect();
  const started = Date.now();
  // idle_timeout_secs = 2: without keepalives the server would close the link after 2 s.
  await waitFor(() => Date.now() - started > 3500 && a.client.state === "connected", "3.5 s connected", 8000);
  assert.equal(link.accepted, 1, "still the first connection");
  assert.ok(!a.rec.states.some((s) => s.state === "reconnecting"), JSON.stringify(a.rec.states));
  assert.deepEqual(a.rec.errors, [], "no IDLE_TIMEOUT");
});

test("dead link: nothing received for 3 intervals → the client reconnects and resumes", async () => {
  const link = await countingProxy();
  const a = await client(129, uniq("dead"), { url: link.url });
  await a.client.connect();
  link.swallowDown = true; // the server's pongs never arrive
  const [, detail] = await nextEvent(a.client, "state", (s) => s === "reconnecting", 8000);
  assert.equal(detail.error.code, "NETWORK");
  link.swallowDown = false;
  const [, back] = await nextEvent(a.client, "state", (s) => s === "connected", 10_000);
  assert.deepEqual(back, { resumed: true });
  assert.ok(link.accepted >= 2);
});

test("rate limit: sends beyond the connection's rate are retried after retry_after_ms, all stored once", async () => {
  const a = await client(129, uniq("fast"));
  const b = await client(129, uniq("sink"));
  await a.client.connect();
  await b.client.connect();
  // send_frames_burst = 2, 2/s: of 6 sends at once, 4 are refused RATE_LIMITED at first.
  const receipts = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => a.client.sendText(b.user, `r${i}`)));
  assert.equal(new Set(receipts.map((r) => r.msgid)).size, 6);
  assert.ok(receipts.every((r) => !r.duplicate), "a refused frame was not handled: no duplicates");
  await waitFor(() => b.rec.messages.length === 6, "6 messages at b");
  assert.deepEqual(b.rec.messages.map((m) => m.content.text).sort(), ["r1", "r2", "r3", "r4", "r5", "r6"]);
});

test("kick: a revoked user is kicked LOGGED_OUT and the client ends (no reconnect)", async () => {
  const a = await client(129, uniq("revoked"));
  await a.client.connect();
  const kicked = nextEvent(a.client, "kicked");
  const res = await fetch(`${server.api}/v1/tokens/revoke`, {
    method: "POST",
    headers: { authorization: "Bearer dev-api-key-change-me", "content-type": "application/json" },
    body: JSON.stringify({ appcode: 129, uid: a.user.uid }),
  });
  assert.ok(res.ok, `${res.status} ${await res.text()}`);
  const [kick] = await kicked;
  assert.equal(kick.reason, "LOGGED_OUT");
  await waitFor(() => a.client.state === "closed", "closed");
  assert.ok(!a.rec.states.some((s) => s.state === "reconnecting"));
});
