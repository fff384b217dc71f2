# Sourced by the scripts: create .venv if missing and (re)install the project when
# pyproject.toml changed since the last install. Usage: . scripts/_venv.sh [EXTRA,EXTRA...]
# (extras of pyproject.toml, e.g. "node,test"; the plain install is the auditor alone)
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
# The stamp holds the pyproject hash and the extras installed with it ("HASH node,test").
# An install serves every script whose extras it includes; otherwise the union is installed.
read -r HAVE_HASH HAVE_EXTRAS < "$STAMP" 2>/dev/null || { HAVE_HASH=""; HAVE_EXTRAS=""; }
[ "$HAVE_HASH" = "$HASH" ] || HAVE_EXTRAS=""
ALL="$(printf '%s\n' ${EXTRAS//,/ } ${HAVE_EXTRAS//,/ } | sort -u | paste -sd, -)"
if [ "$HAVE_HASH" != "$HASH" ] || [ "$ALL" != "$HAVE_EXTRAS" ]; then
  echo "installing provledger${ALL:+[$ALL]} into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  if [ -n "$ALL" ]; then SPEC="$ROOT[$ALL]"; else SPEC="$ROOT"; fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$SPEC" >&2
  echo "$HASH $ALL" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
