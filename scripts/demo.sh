#!/usr/bin/env bash
# The main job on a fresh machine: installs what sparsellm needs (Debian packages, npm packages, the addon),
# prunes the bundled stories260K model with SparseLLM to 50 % sparsity, and evaluates it on the
# bundled TinyStories sample. Output: out/demo (pruned ONNX + sparsellm-report.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
export ONNXRUNTIME_NODE_INSTALL=skip ORT_DISABLE_TELEMETRY=1
[ -f native/build/Release/sparsellm_native.node ] && [ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent build   # compile src/ to dist/, which the bin runs
npm run --silent demo
node bin/sparsellm.js inspect out/demo
