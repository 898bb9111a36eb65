#!/usr/bin/env bash
# Builds the Dockerfile with buildah (CPU torch), then runs the in-image checks (quick start, --compile=true, data,
# DCS rendering, one method script's tests).
#   bash scripts/docker/build_ci_image.sh             # after scripts/docker/make_base_image.sh
# Settings: IMAGE [laom-ci], BASE_IMAGE [debian:bookworm-slim], TORCH_SPEC [torch==2.13.0+cpu], CHECKS [1] (0: build
# only), STORAGE_DRIVER [vfs]. pip inside the build uses the builder's pip configuration (not stored in the image).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-laom-ci}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
CHECKS=${CHECKS:-1}
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
if ! buildah inspect --type image "$BASE_IMAGE" > /dev/null 2>&1; then
    echo "build_ci_image: the base image $BASE_IMAGE is not in buildah's storage; make it from Debian's packages" \
        "with: BASE_IMAGE=$BASE_IMAGE bash scripts/docker/make_base_image.sh (or pull it: buildah pull $BASE_IMAGE)" >&2
    exit 1
fi
work=$(mktemp -d)
ctr=""
cleanup() {
    [[ -n "$ctr" ]] && buildah rm "$ctr" > /dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
# The builder's pip configuration, its local paths mapped to /run/pip-host/<n>: pip.conf and one -v per path.
python3 - "$work" > "$work/volumes" <<'PY'
import os, subprocess, sys
work = sys.argv[1]
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
sections, mounts = {}, {}
def local(token):  # a local index (file://) is mounted with its parent: its pages link to ../../files/...
    url = token.startswith("file://")
    path = token[len("file://"):].rstrip("/") if url else token
    if not os.path.isabs(path) or not os.path.exists(path):
        return token
    mounted = os.path.dirname(path) if url else path
    inside = mounts.setdefault(mounted, f"/run/pip-host/{len(mounts)}")
    return f"file://{inside}/{os.path.basename(path)}" if url else inside
for line in listed.stdout.splitlines():
    key, _, value = line.partition("=")
    scope, _, name = key.partition(".")
    section = "global" if scope in (":env:", "global", "site", "user") else scope
    sections.setdefault(section, {})[name] = " ".join(local(t) for t in value.strip("'\"").split())
with open(os.path.join(work, "pip.conf"), "w") as f:
    for section, values in sections.items():
        f.write(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
for path, inside in mounts.items():
    print(f"{path}:{inside}:ro")
PY
volumes=(-v "$work/pip.conf:/etc/pip.conf:ro")
while read -r v; do volumes+=(-v "$v"); done < "$work/volumes"
start=$SECONDS
buildah bud --quiet --isolation chroot --network host --pull=never --layers \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_SPEC=$TORCH_SPEC" --build-arg TORCH_BUILD=cpu \
    "${volumes[@]}" -t "$IMAGE" -f Dockerfile . > "$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
size=$(buildah images --format '{{.Size}}' "$IMAGE" 2>/dev/null | head -1)
echo "image $IMAGE built in $((SECONDS - start)) s (base $BASE_IMAGE, $TORCH_SPEC); size ${size:-unknown}"
[[ "$CHECKS" == 1 ]] || exit 0
start=$SECONDS
ctr=$(buildah from --pull=never "$IMAGE")
buildah run --isolation chroot --network host "$ctr" -- bash -c '
    set -e
    python -c "import sys, torch; print(\"in-image python\", sys.version.split()[0], \"torch\", torch.__version__)"
    python -m train_laom_labels --config_path configs/example/laom-labels.yaml --run_dir /tmp/quickstart \
        --wandb_mode=disabled > /tmp/quickstart.log 2>&1 || { tail -30 /tmp/quickstart.log; exit 1; }
    tail -3 /tmp/quickstart.log
    python -m train_bc --run_dir /tmp/compiled --wandb_mode=disabled --device=cpu --compile=true --log_every=1 \
        --bc.total_updates=2 --bc.batch_size=16 --bc.encoder_scale=1 --bc.max_trajectories=2 --bc.eval_episodes=0 \
        > /tmp/compiled.log 2>&1 || { tail -30 /tmp/compiled.log; exit 1; }
    echo "compiled stage: 2 updates of BC with --compile=true"
    python -m pytest -q -p no:cacheprovider tests/test_data.py tests/test_dcs_envs.py tests/test_train_bc.py'
echo "in-image checks passed in $((SECONDS - start)) s (quick start; a compiled BC stage; tests/test_data.py, test_dcs_envs.py, test_train_bc.py)"
