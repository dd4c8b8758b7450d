// Test harness: a real `longlink serve` per test file (own temp data dir, ports chosen by the
// kernel), tokens and the Rust CLI client through the same binary, a cuttable TCP proxy, and
// deadline-bounded waits (no fixed sleeps). Every spawned process is killed at the end, also
// when a test fails (after() hooks plus a process 'exit' handler).
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { promisify } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.LONGLINK_BIN ?? resolve(here, "../../target/debug/longlink");
const ARTIFACTS = resolve(here, "../test-artifacts");

const children = new Set();
process.on("exit", () => {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
});

function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Polls `check` until it returns a truthy value; throws after `timeoutMs` naming `what`. */
export async function waitFor(check, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the arguments of the first `event` of `client` that satisfies `pred`. */
export function nextEvent(client, event, pred = () => true, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for event ${event}`));
    }, timeoutMs);
    const off = client.on(event, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

/** Runs `longlink serve --config` and waits for its "longlink ready" line (JSON logs). */
async function launch(config, log) {
  const child = track(
    spawn(BIN, ["serve", "--config", config], {
      env: { ...process.env, LONGLINK_LOG: "info", LONGLINK_LOG_FORMAT: "json" },
      stdio: ["ignore", "ignore", "pipe"],
    }),
  );
  const ready = await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve not ready in 20 s:\n${log.join("\n")}`)), 20_000);
    let buffered = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        log.push(line);
        if (line.includes("longlink ready")) {
          clearTimeout(timer);
          resolveReady(JSON.parse(line));
        }
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited (${code}) before it was ready:\n${log.join("\n")}`));
    });
  });
  return { child, ready };
}

async function terminate(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.on("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts `longlink serve`. `extra` is TOML appended to the config (sections must not repeat
 * [gate]/[api]/[store]/[guard]; use `gate`, `guard` for lines in those sections).
 */
export async function startServer({ name = "server", gate = "", guard = "", extra = "" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "longlink-sdk-ts-"));
  const config = join(dir, "longlink.toml");
  writeFileSync(
    config,
    [
      "[gate]",
      'listen = "127.0.0.1:0"',
      'ws_listen = "127.0.0.1:0"',
      gate,
      "[api]",
      'listen = "127.0.0.1:0"',
      'grpc_listen = ""',
      "[store]",
      `data_dir = ${JSON.stringify(join(dir, "data"))}`,
      "[guard]",
      // Every test connection comes from 127.0.0.1: the per-IP flapping limit would bite.
      "ip_max_connects = 0",
      "device_max_logins = 0",
      guard,
      extra,
    ].join("\n"),
  );
  mkdirSync(ARTIFACTS, { recursive: true });
  const logPath = join(ARTIFACTS, `${name}-${process.pid}.log`);
  const log = [];
  let { child, ready } = await launch(config, log);
  const server = {
    dir,
    config,
    get tcp() {
      return ready.gate;
    },
    get wsUrl() {
      return `ws://${ready.ws}`;
    },
    get wsAddr() {
      return ready.ws;
    },
    get api() {
      return `http://${ready.api}`;
    },
    log,
    /** Stops the process (SIGTERM: clients get KICK SERVER_SHUTDOWN) and starts it again on the same data. */
    async restart() {
      await terminate(child);
      ({ child, ready } = await launch(config, log));
    },
    async token(appcode, uid) {
      const { stdout } = await promisify(execFile)(BIN, ["token", "--appcode", String(appcode), "--uid", uid, "--config", config]);
      return stdout.trim();
    },
    /** Runs a `longlink client …` command to completion; resolves with stdout. */
    async cli(args, timeoutMs = 20_000) {
      const { stdout } = await promisify(execFile)(BIN, ["client", ...args, "--server", ready.gate, "--config", config], {
        timeout: timeoutMs,
      });
      return stdout;
    },
    /** Starts `longlink client listen --json`; `lines` fills with the parsed JSON lines. */
    listen(args) {
      const proc = track(
        spawn(BIN, ["client", "listen", "--json", "--server", ready.gate, "--config", config, ...args], {
          stdio: ["ignore", "pipe", "pipe"],
        }),
      );
      const lines = [];
      const errors = [];
      let buffered = "";
      proc.stdout.setEncoding("utf8");
      proc.stdout.on("data", (chunk) => {
        buffered += chunk;
        let nl;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line) lines.push(parseJsonLine(line));
        }
      });
      proc.stderr.setEncoding("utf8");
      proc.stderr.on("data", (chunk) => errors.push(chunk));
      return {
        lines,
        errors,
        kill: () => proc.kill("SIGKILL"),
        exited: new Promise((r) => proc.on("exit", r)),
      };
    },
    async stop() {
      await terminate(child);
      writeFileSync(logPath, log.join("\n"));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * A TCP proxy in front of the gate's WebSocket port. `cut()` destroys every live link (the
 * client sees the connection drop, the server sees EOF); `blocked` refuses new links;
 * `swallowDown` forwards client → server but drops server → client bytes (an answer lost on
 * the way back).
 */
export async function startProxy(targetAddr) {
  const links = new Set();
  const proxy = {
    /** Where new links go ("host:port"); may change (a restarted server). */
    target: targetAddr,
    blocked: false,
    swallowDown: false,
    accepted: 0,
    cut() {
      for (const link of links) {
        link.client.destroy();
        link.upstream.destroy();
      }
      links.clear();
    },
    get live() {
      return links.size;
    },
  };
  const server = net.createServer((client) => {
    if (proxy.blocked) {
      client.destroy();
      return;
    }
    proxy.accepted += 1;
    const [host, port] = splitAddr(proxy.target);
    const upstream = net.connect(port, host);
    const link = { client, upstream };
    links.add(link);
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d) => {
      if (!proxy.swallowDown) client.write(d);
    });
    const end = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.url = `ws://127.0.0.1:${server.address().port}`;
  proxy.close = () =>
    new Promise((r) => {
      proxy.cut();
      server.close(() => r());
    });
  return proxy;
}

/** JSON.parse, with integers beyond 2^53 (msgids, log ids) kept exact as strings. */
export function parseJsonLine(line) {
  return JSON.parse(line.replace(/([:\[,]\s*)(\d{16,})(?=\s*[,}\]])/g, '$1"$2"'));
}

function splitAddr(addr) {
  const at = addr.lastIndexOf(":");
  return [addr.slice(0, at), Number(addr.slice(at + 1))];
}

/** Collects a client's events for assertions. */
export function record(client) {
  const rec = { messages: [], states: [], typing: [], receipts: [], errors: [], kicked: [] };
  client.on("message", (m) => rec.messages.push(m));
  client.on("state", (s, d) => rec.states.push({ state: s, ...d }));
  client.on("typing", (t) => rec.typing.push(t));
  client.on("receipt", (r) => rec.receipts.push(r));
  client.on("error", (e) => rec.errors.push(e));
  client.on("kicked", (k) => rec.kicked.push(k));
  return rec;
}

let counter = 0;
/** A uid no other test uses (one server per file, but tests in a file share it). */
export function uniq(prefix) {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}
