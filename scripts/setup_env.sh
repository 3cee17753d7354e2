# Sourced by scripts/test.sh and scripts/demo.sh: creates or reuses .venv with
# everything the tests, the demo and the docs need, and sets $PY.
# The venv is reused only while requirements/ci-cpu.txt and pyproject.toml are
# unchanged (a hash stamp), so a reused venv equals a fresh one.
# torch is pinned to the CPU wheel (torch==2.13.0) in requirements/ci-cpu.txt:
# a looser torch requirement would pull a multi-GB CUDA build on this machine.

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
stamp="$venv/.keras_norms_requirements.sha256"
want="$(cat "$repo_root/requirements/ci-cpu.txt" "$repo_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing into $venv (requirements changed or no venv yet)"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$repo_root/requirements/ci-cpu.txt"
  "$venv/bin/python" -m pip install -q --no-deps -e "$repo_root"
  echo "$want" > "$stamp"
else
  echo "[setup] reusing $venv"
fi
PY="$venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
