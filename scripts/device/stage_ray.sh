#!/usr/bin/env bash
# Here (not on the device): stage Ray for scripts/device/fleet_2gpu.sh's Ray mode. The device
# has no network and no Ray; the Ray 2.60.0 cp312 wheel is 79,321,593 bytes (75.6 MiB), more
# than one call carries (64 MiB with the tree), so it travels in two calls of its own:
# .gpu_ray_a (the first 38 MiB) and .gpu_ray_b (the rest + Ray's pure-Python deps).
# Usage (project root): bash scripts/device/stage_ray.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cache=${GPU_STAGE_CACHE:-$HOME/.cache/gpu-stage}/ray
mkdir -p "$cache"
PIP_CONFIG_FILE=/dev/null python3 -m pip download -q --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any -d "$cache" ray==2.60.0
cd "$root"
exclude=$(git rev-parse --git-path info/exclude)
grep -qs '^/.gpu_ray_a/' "$exclude" || printf '/.gpu_ray_a/\n/.gpu_ray_b/\n' >> "$exclude"
rm -rf .gpu_ray_a .gpu_ray_b; mkdir .gpu_ray_a .gpu_ray_b
split -b 38M "$cache"/ray-2.60.0-*.whl .gpu_ray_a/ray.part.
mv .gpu_ray_a/ray.part.a[b-z] .gpu_ray_b/
find "$cache" -name '*.whl' ! -name 'ray-*' -exec cp {} .gpu_ray_b/ \;
du -sh .gpu_ray_a .gpu_ray_b
