#!/usr/bin/env bash
# Makes the Dockerfile's base image from Debian's packages (mmdebstrap) in buildah's local storage, so that a build
# needs no image registry; returns at once when the image is there.
#   bash scripts/docker/make_base_image.sh            # BASE_IMAGE [debian:bookworm-slim]
# Needs root, buildah and mmdebstrap (apt-get install -y buildah mmdebstrap).
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
if buildah inspect --type image "$BASE_IMAGE" > /dev/null 2>&1; then
    echo "base image $BASE_IMAGE: present"
    exit 0
fi
suite=${BASE_IMAGE##*:}
suite=${suite%-slim}
for tool in buildah mmdebstrap; do
    command -v "$tool" > /dev/null || { echo "make_base_image: $tool is missing: apt-get install -y buildah mmdebstrap" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
mmdebstrap --quiet --variant=minbase --include=ca-certificates "$suite" "$work/rootfs.tar"
ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" / > /dev/null
buildah config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
buildah commit --quiet --rm "$ctr" "docker.io/library/$BASE_IMAGE" > /dev/null
buildah tag "docker.io/library/$BASE_IMAGE" "$BASE_IMAGE"
echo "base image $BASE_IMAGE: made from Debian $suite packages in $((SECONDS - start)) s"
