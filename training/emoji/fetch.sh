#!/bin/sh
# Installs the pinned emoji packages (package-lock.json) into
# training/emoji/node_modules and builds training/emoji/data/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
node build_dataset.js "${1:-$here/data}"
