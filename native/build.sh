#!/bin/sh
# Builds native/build/nfstate_udp.node (batched UDP, native/udp.c) against the headers of the Node.js that
# runs this script. Without a C compiler or those headers nothing is built, and datagrams go through
# node:dgram (src/wire/batch-socket.ts says which path runs). Nothing is downloaded.
cd "$(dirname "$0")" || exit 1
include="$(node -p "require('node:path').join(process.execPath, '..', '..', 'include', 'node')")"
if ! command -v cc >/dev/null 2>&1 || [ ! -f "$include/node_api.h" ] || [ ! -f "$include/uv.h" ]; then
  echo "native: no C compiler or no Node headers at $include; datagrams go through node:dgram" >&2
  exit 0
fi
mkdir -p build
if ! cc -O2 -Wall -Wextra -shared -fPIC -I"$include" -o build/nfstate_udp.node udp.c; then
  rm -f build/nfstate_udp.node
  echo "native: the build failed; datagrams go through node:dgram" >&2
fi
exit 0
