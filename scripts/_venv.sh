# Sourced by the scripts: create .venv if missing and (re)install the project when
# pyproject.toml changed since the last install. Usage: . scripts/_venv.sh [EXTRAS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${1:-}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY="$c"; break; fi
  done
fi
[ -n "$PY" ] || { echo "provledger needs Python >= 3.11 on PATH" >&2; exit 2; }
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.install-stamp"
HASH="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)"
WANT="$HASH-$EXTRAS"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
# An install serves any run whose extras it has (a plain run needs none).
covered() {
  [ "${HAVE%%-*}" = "$HASH" ] || return 1
  local e
  for e in ${EXTRAS//,/ }; do [[ ",${HAVE#*-}," == *",$e,"* ]] || return 1; done
}
if [ "$HAVE" != "$WANT" ] && ! covered; then
  echo "installing provledger into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  if [ -n "$EXTRAS" ]; then SPEC="$ROOT[$EXTRAS]"; else SPEC="$ROOT"; fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$SPEC" >&2
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
