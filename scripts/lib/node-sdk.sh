#!/usr/bin/env bash
# Installs the npm packages of tests/js (Clerk's JavaScript backend SDK, @clerk/backend, at
# the version package-lock.json pins) into tests/js/node_modules with `npm ci`, when they are
# missing or were installed from another lock file, and prints the path of tests/js.
# Needs node (20.9 or later, as @clerk/backend requires) and npm, and the npm registry the
# first time.
set -euo pipefail
cd "$(dirname "$0")/../.."

DIR="$PWD/tests/js"
marker="$DIR/node_modules/.installed-from-lock"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is not installed; the @clerk/backend test needs node 20.9 or later and npm" >&2
    exit 1
  fi
done
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 9) ? 0 : 1)'; then
  echo "node $(node --version) is too old; @clerk/backend needs 20.9 or later" >&2
  exit 1
fi

lock_digest=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$lock_digest" ]; then
  echo "    installing tests/js's npm packages (npm ci)" >&2
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$lock_digest" >"$marker"
fi
echo "$DIR"
