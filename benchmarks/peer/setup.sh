#!/usr/bin/env bash
# Creates the two peer venvs beside this script (git-ignored):
#   .venv-ppo     TRL 1.12.0, the last release with trl.experimental.ppo  (requirements.txt)
#   .venv-reward  TRL 1.16.0, the current RewardTrainer                     (requirements-reward.txt)
# Idempotent: a venv is left alone while its .installed marker is newer than its requirements file.
set -euo pipefail
cd "$(dirname "$0")"

make_venv() {  # make_venv DIR REQUIREMENTS
  local dir=$1 req=$2
  if [ -f "$dir/.installed" ] && [ "$dir/.installed" -nt "$req" ]; then
    echo "$dir: up to date"
    return
  fi
  echo "$dir: installing $req"
  test -x "$dir/bin/python" || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
  "$dir/bin/python" -m pip check
  touch "$dir/.installed"
}

make_venv .venv-ppo requirements.txt
make_venv .venv-reward requirements-reward.txt
