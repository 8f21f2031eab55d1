#!/usr/bin/env bash
# Runs the generate example with several flag sets; prints "name sha256" per WAV.
# Usage: notes/wav-runs.sh BINARY OUTDIR
set -euo pipefail
bin=$1; out=$2; mkdir -p "$out"
run() { local name=$1; shift; "$bin" --out "$out/$name.wav" "$@" >/dev/null 2>&1; echo "$name $(sha256sum "$out/$name.wav" | cut -d' ' -f1)"; }
run default
run seed7 --seed 7
run greedy --temperature 0 --text-temperature 0 --steps 60
run topk_topp --top-k 10 --top-p 0.9 --text-top-p 0.95 --text-top-k 5 --steps 60
run penalties --repetition-penalty 1.3 --text-repetition-penalty 1.2 --steps 80
run native --engine native --seed 3 --steps 60
run minp --min-p 0.1 --steps 60
run hot --temperature 1.5 --text-temperature 1.2 --seed 11 --steps 50
