# Sourced by scripts/test: puts a Node.js >= 20 with npm on the PATH for the TypeScript SDK's
# tests (sdk-ts/). A machine that has one keeps it. Debian 12's own nodejs is 18, too old, so
# otherwise Node 22 is fetched from the npm registry (the `node-linux-<arch>` package holds the
# official binary; `npm` the package manager) into .tools/ (git-ignored, reused next time),
# using Debian's npm once to download them.

ensure_node() {
  local want="${LONGLINK_NODE_MIN:-20}"
  if command -v node >/dev/null && command -v npm >/dev/null \
     && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge "$want" ]; then
    return 0
  fi
  local root tools arch
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  tools="$root/.tools"
  if [ -x "$tools/node/bin/node" ] && [ -x "$tools/node/bin/npm" ]; then
    export PATH="$tools/node/bin:$PATH"
    return 0
  fi
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "scripts/node.sh: no Node.js >= $want and no prebuilt one for $(uname -m); install it" >&2; return 1 ;;
  esac
  echo "==> installing Node.js 22 into .tools/ (the machine has no Node.js >= $want)"
  if ! command -v npm >/dev/null; then
    local sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq nodejs npm
  fi
  rm -rf "$tools/node" "$tools/npm" "$tools/download"
  mkdir -p "$tools/node" "$tools/npm" "$tools/download"
  (cd "$tools/download" && npm pack --silent "node-linux-$arch@22" "npm@10" >/dev/null)
  tar xzf "$tools"/download/node-linux-"$arch"-*.tgz -C "$tools/node" --strip-components=1
  tar xzf "$tools"/download/npm-*.tgz -C "$tools/npm" --strip-components=1
  rm -rf "$tools/download"
  # npm is a JavaScript program: run it with the new node.
  printf '#!/bin/sh\nexec "%s/node/bin/node" "%s/npm/bin/npm-cli.js" "$@"\n' "$tools" "$tools" \
    > "$tools/node/bin/npm"
  chmod +x "$tools/node/bin/npm"
  export PATH="$tools/node/bin:$PATH"
  echo "==> $(node --version), npm $(npm --version)"
}
