# Sourced by the scripts: make sure .venv holds the package (editable) and the test tools.
# The venv is rebuilt when setup.cfg or requirements-test.txt change.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
stamp="$venv/.csi-migrate-stamp"
want=$(cat "$repo/setup.cfg" "$repo/requirements-test.txt" | sha256sum | cut -c1-16)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "scripts: preparing $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$repo/requirements-test.txt" -e "$repo" >&2
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
