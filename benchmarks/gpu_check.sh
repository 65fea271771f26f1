#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU (the `device` tool's): parts 2-4 within 10 minutes, part 5
# in a second call (PARTS names the parts to run, default all):
#   1. the card (nvidia-smi) and torch's view of it;
#   2. tests/test_cuda.py: bf16 and 4-bit NF4 load, bitsandbytes' CUDA kernels, no oneDNN CPU path, one PPO
#      step and one reward-model step on the GPU                                             (at most 150 s);
#   3. the workshop path on CUDA: the Workshop page's own commands (workshop.cli_commands("cuda"): the pairs,
#      the reward model, the 4-beta sweep with best-of-n), timed                             (at most 300 s);
#   4. our PPO and GRPO steps on CUDA (ppo_speed.py, method_speed.py), and TRL's beside them with
#      compare_trl.py when the peer venvs of benchmarks/peer/setup.sh are there              (at most 120 s);
#   5. a workshop room's 8 participants' runs (the GPU preset, 3 steps) in one group process against 8 separate
#      processes (room_side_by_side.py): peak memory and participant-steps per minute      (at most 300 s).
# Writes everything under OUT (default benchmarks/results/gpu-check): gpu.txt, tests.log, workshop.json,
# speed-*.json, room-side-by-side.json and a summary.json of each part's exit code and seconds. A part that
# fails or times out is recorded and the next one runs. Needs the project's venv with a CUDA build of torch
# 2.13.0: the pinned CPU build sees no GPU, and the script says so and stops.
#
#   PY=.venv/bin/python OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#   PY=.venv/bin/python OUT=/tmp/gpu PARTS=room bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu-check}
PARTS=${PARTS:-tests workshop speed room}
mkdir -p "$OUT"
declare -A CODE SPENT

part() {  # part NAME LIMIT_S COMMAND...: run it under a time limit, log it, record its exit code and seconds
  local name=$1 limit=$2
  shift 2
  case " $PARTS " in *" $name "*) ;; *) echo "== $name: not in PARTS, skipped"; return ;; esac
  local start=$SECONDS
  echo "== $name (at most ${limit} s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  CODE[$name]=$?
  SPENT[$name]=$((SECONDS - start))
  tail -n 4 "$OUT/$name.log" | cut -c1-300
  echo "== $name: exit ${CODE[$name]} in ${SPENT[$name]} s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1 || true
"$PY" - >>"$OUT/gpu.txt" 2>&1 <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
EOF
cat "$OUT/gpu.txt"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to $PY's torch (a CPU build, or no GPU): nothing to check" | tee -a "$OUT/gpu.txt"
  exit 1
fi

part tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py

WORKSPACE=$(mktemp -d)
part workshop 300 "$PY" - "$WORKSPACE" "$OUT/workshop.json" <<'EOF'
import json, os, shlex, subprocess, sys, time
from rlhf_engine.lab.workshop import cli_commands
workspace, out = sys.argv[1], sys.argv[2]
env = {"RLHF_WORKSPACE": workspace}
timings, started = [], time.perf_counter()
for command in cli_commands(f"{workspace}", "cuda")[:3]:  # pairs, reward model, sweep (not the report or overopt)
    argv = [sys.executable, *shlex.split(command)[1:]]
    t = time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, **env})
    timings.append({"command": command, "exit": done.returncode, "seconds": time.perf_counter() - t})
    print(timings[-1], flush=True)
    if done.returncode:
        break
json.dump({"steps": timings, "total_s": time.perf_counter() - started}, open(out, "w"), indent=2)
EOF

part speed 120 bash -c "
  '$PY' benchmarks/ppo_speed.py --iterations 3 --warmup 1 --quant 4bit --rm-quant 4bit --out '$OUT/speed-ppo.json' &&
  '$PY' benchmarks/method_speed.py --method grpo --iterations 3 --warmup 1 --out '$OUT/speed-grpo.json' &&
  if [ -x benchmarks/peer/.venv-reward/bin/python ]; then
    '$PY' benchmarks/compare_trl.py --skip-rm --skip-ppo --methods grpo --iterations 3 --out '$OUT/compare-trl'
  else
    echo 'no peer venvs (benchmarks/peer/setup.sh): TRL not compared'
  fi"

REWARD=()  # the workshop part's reward model when it ran, else room_side_by_side.py trains one
[ -f "$WORKSPACE/runs/workshop-rm/reward_model.json" ] && REWARD=(--reward "$WORKSPACE/runs/workshop-rm")
ROOM=$(mktemp -d)
part room 300 "$PY" benchmarks/room_side_by_side.py --device cuda --runs 8 --steps 3 --max-processes 8 \
  ${REWARD[@]+"${REWARD[@]}"} --out "$ROOM/bench" --results "$OUT/room-side-by-side.json"

"$PY" - "$OUT" <<EOF
import json, sys
codes = {$(for k in "${!CODE[@]}"; do printf '"%s": %s, ' "$k" "${CODE[$k]}"; done)}
seconds = {$(for k in "${!SPENT[@]}"; do printf '"%s": %s, ' "$k" "${SPENT[$k]}"; done)}
json.dump({"exit": codes, "seconds": seconds}, open(sys.argv[1] + "/summary.json", "w"), indent=2)
print(json.dumps({"exit": codes, "seconds": seconds}))
EOF
for code in "${CODE[@]}"; do [ "$code" = 0 ] || exit 1; done
