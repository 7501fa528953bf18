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
fi
export E PY
