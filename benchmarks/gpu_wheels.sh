#!/usr/bin/env bash
# The wheels that benchmarks/gpu_session.sh installs on the GPU machine, into .whl/ (git-ignored
# through .git/info/exclude): what that machine's python3 (3.12, x86-64) lacks, at the versions of
# constraints.txt, and the sds packages, built from the committed tree (HEAD) so that
# uncommitted edits do not travel; `--worktree` builds them from the working tree instead.
# Not carried: torch, imageio-ffmpeg (video export only) and ray, which are large.
#
#   bash benchmarks/gpu_wheels.sh            # then: du -sh .whl (it must stay well under 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >>"$exclude"
rm -rf .whl
mkdir .whl

# missing on the GPU machine (its python3 has torch, transformers, huggingface-hub, accelerate,
# safetensors, typer, rich, pluggy, scipy, scikit-image, imageio, pillow, pytest, numpy, zipp, ...)
missing=(diffusers nerfacc trimesh xatlas importlib_metadata lazy-importer gsplat jaxtyping wadler-lindig)
pins=()
for name in "${missing[@]}"; do
    pins+=("$(grep -i "^${name}==" constraints.txt)")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

if [[ "${1:-}" == "--worktree" ]]; then
    root=.
else
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    git archive HEAD packages | tar -x -C "$root"
fi
for package in core guidance shapes shapes-learned 3d nerf mesh gaussians eval cli; do
    "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation "$root/packages/sds-$package" -w .whl
done
ls -l .whl
du -sh .whl
