// npm test (after `npm run build`): checks that src/gen matches proto/longlink.proto, finds or
// builds the longlink binary, then runs the node:test files in test/ against real servers.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repo = resolve(sdk, "..");

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { stdio: "inherit", ...options });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

// 1. The generated bindings must be what buf makes of the proto today (no drift from Rust).
{
  const out = mkdtempSync(join(tmpdir(), "longlink-gen-"));
  try {
    const bin = join(sdk, "node_modules", ".bin");
    const status = run(
      join(bin, "buf"),
      ["generate", "../proto", "--path", "../proto/longlink.proto", "--template", "buf.gen.yaml", "-o", out],
      { cwd: sdk, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } },
    );
    if (status !== 0) {
      console.error("buf generate failed");
      process.exit(1);
    }
    const fresh = readFileSync(join(out, "src/gen/longlink_pb.ts"), "utf8");
    const checkedIn = readFileSync(join(sdk, "src/gen/longlink_pb.ts"), "utf8");
    if (fresh !== checkedIn) {
      console.error("src/gen/longlink_pb.ts differs from proto/longlink.proto: run `npm run generate` and commit the result");
      process.exit(1);
    }
    console.log("generated code matches proto/longlink.proto");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

// 2. The server binary.
const bin = process.env.LONGLINK_BIN ?? join(repo, "target", "debug", "longlink");
if (!existsSync(bin)) {
  if (process.env.LONGLINK_BIN) {
    console.error(`LONGLINK_BIN=${bin} does not exist`);
    process.exit(1);
  }
  console.log(`${bin} is missing: running \`cargo build --bin longlink\` in ${repo}`);
  if (run("cargo", ["build", "--bin", "longlink"], { cwd: repo }) !== 0) process.exit(1);
}

// 3. The tests. Node 20 has a WebSocket only behind a flag; Node >= 22 has it by default.
const files = readdirSync(join(sdk, "test"))
  .filter((f) => f.endsWith(".test.mjs"))
  .sort()
  .map((f) => join("test", f));
const flags = typeof globalThis.WebSocket === "undefined" ? ["--experimental-websocket"] : [];
// Each file runs its own server and mostly waits on sockets: run them all at once, whatever
// the core count (node's default is one file per core).
flags.push(`--test-concurrency=${files.length}`);
const extra = process.argv.slice(2); // e.g. npm test -- --test-name-pattern=resume
const status = run(process.execPath, [...flags, "--test", ...extra, ...files], {
  cwd: sdk,
  env: { ...process.env, LONGLINK_BIN: bin, NODE_NO_WARNINGS: "1" },
});
process.exit(status);
