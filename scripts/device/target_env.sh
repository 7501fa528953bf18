#!/usr/bin/env bash
# Source me on the device machine after the vLLM stage (shared/gpu/install.sh): makes
# /tmp/tenv, a target env whose bin/python runs the device's torch venv with the stage on
# PYTHONPATH, and whose site-packages links the venv's and the stage's packages (the suite
# reads dists and binaries from there). Sets PY and E.
PY=${PY:-/opt/torch/.venv/bin/python}
E=/tmp/tenv
if [ ! -x $E/bin/python ]; then
  printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec %s "$@"\n' "$PY" > /tmp/pywrap; chmod +x /tmp/pywrap
  $PY -c 'from pathlib import Path; from fixtures.envs import EnvBuilder; b = EnvBuilder(Path("/tmp"), "tenv", bare=True); b.python("3.12.3", executable="/tmp/pywrap"); b.manifest()'
  SP=$E/lib/python3.12/site-packages; mkdir -p "$SP"
  for d in /opt/torch/.venv/lib/python3.12/site-packages/* /tmp/site/*; do ln -sf "$d" "$SP/"; done
  # the wrapped interpreter's headers, where a real env keeps them (prefix/include): Triton's
  # launcher build reads sysconfig's include dir, which for the device venv is the base's
  INC=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  mkdir -p $E/include && ln -sfn "$INC" $E/include/python3.12
fi
export E PY
