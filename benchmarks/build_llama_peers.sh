#!/usr/bin/env bash
# Build llama.cpp's peers of draftwise (llama-server, llama-speculative-simple) from the llama.cpp
# sources vendored in the llama-cpp-python sdist that draftwise itself builds from, with the same
# GGML flags. For benchmarks only (about 10 minutes on 2 cores); never run in CI.
#
#   benchmarks/build_llama_peers.sh [OUT_DIR]       # default: build/peers
#   LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" benchmarks/build_llama_peers.sh
#
# Prints the binaries' paths. The server binds where it is told: give it --host 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/peers}
VERSION=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
FLAGS=${LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON"}
mkdir -p "$OUT"
SRC="$OUT/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  .venv/bin/pip download -q --no-deps --no-binary :all: -d "$OUT" "llama-cpp-python==$VERSION"
  tar -xzf "$OUT/llama_cpp_python-$VERSION.tar.gz" -C "$OUT"
fi
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$OUT/cmake" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DBUILD_SHARED_LIBS=OFF $FLAGS > "$OUT/cmake.log"
cmake --build "$OUT/cmake" -j "$(nproc)" --target llama-server llama-speculative-simple > "$OUT/build.log"
ls "$OUT/cmake/bin/llama-server" "$OUT/cmake/bin/llama-speculative-simple"
