#!/usr/bin/env bash
# Not part of CI: needs the models and build/peers (benchmarks/build_llama_peers.sh); about 8 minutes.
# Issue 11: bench --endpoint against a live draftwise serve and the llama-server that export wrote.
set -u
cd "$(dirname "$0")/.."; M=$PWD; W=$PWD; PY=$PWD/.venv/bin/python
DW() { $PY -c "from draftwise.cli import main; main()" "$@"; }
R=$W/benchmarks/results; E=$R/export_llama_server; rm -rf $E
DW export --to llama-server -t qwen2.5-coder-1.5b-q8_0 -d qwen2.5-coder-0.5b-q4_0 -k 3 --port 8081 --parallel 4 --out $E > $R/endpoint_export.txt 2>&1
(PATH=$M/build/peers/cmake/bin:$PATH nohup sh $E/launch.sh > /tmp/llama_server.log 2>&1 &)
(DW serve -t qwen2.5-coder-1.5b-q8_0 -d qwen2.5-coder-0.5b-q4_0 -k 3 --parallel 4 --threads 2 --port 8082 > /tmp/dw_serve.log 2>&1 &)
for p in 8081 8082; do for i in $(seq 120); do curl -sf http://127.0.0.1:$p/v1/models >/dev/null && break; sleep 2; done; done
cd $W && DW bench --endpoint http://127.0.0.1:8081 --endpoint http://127.0.0.1:8082 --concurrency 1,4 -c code -c chat \
  --n-prompts 4 --max-tokens 64 --out $R/endpoint_side_by_side > $R/endpoint_side_by_side.txt 2>&1
ps aux | grep -E "llama-server|draftwise.cli import main; main\(\) serve" | grep -v grep | tee -a $R/endpoint_export.txt
pkill -f "llama-server -m ./target.gguf"; pkill -f "main; main\(\) serve"
