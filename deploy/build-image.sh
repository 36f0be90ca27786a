#!/usr/bin/env bash
# Builds claimgate's image without any container registry or Dockerfile base
# image: `buildah from scratch`, the release binary, and the shared
# libraries it links (glibc, libgcc_s, libm, the loader) copied from this
# machine. Then runs it (`claimgate demo`, host network, loopback ports) and
# checks /readyz. Used where registries cannot be reached; deploy/Dockerfile
# is the regular build.
#
#   bash deploy/build-image.sh [tag=claimgate:0.1.0]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-claimgate:0.1.0}
command -v buildah >/dev/null && command -v crun >/dev/null || {
  echo "build-image: installing buildah, crun (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah crun >/dev/null
}
cargo build --release --locked --quiet --bin claimgate
bin=target/release/claimgate

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy "$ctr" "$bin" /usr/local/bin/claimgate >/dev/null
# The libraries the binary links, at the paths the loader looks in.
for lib in $(ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  buildah copy "$ctr" "$(readlink -f "$lib")" "$lib" >/dev/null
done
buildah config \
  --entrypoint '["/usr/local/bin/claimgate"]' \
  --cmd '["run", "--config", "/etc/claimgate/process/claimgate.yaml"]' \
  --user 65532:65532 \
  --port 8080 --port 9180 \
  --label org.opencontainers.image.title=claimgate \
  --label "org.opencontainers.image.version=$(awk -F'"' '/^version/ {print $2; exit}' Cargo.toml)" \
  "$ctr"
buildah commit --quiet "$ctr" "$tag" >/dev/null
echo "build-image: $tag, $(buildah images --format '{{.Size}}' "$tag" | head -1)" >&2

# Run it: the demo (embedded policy, its own echo upstream and JWKS) on
# loopback ports; /readyz must answer 200. `--isolation chroot`: on this
# sandbox the OCI runtime (crun) cannot create a container ("cgroups in
# hybrid mode not supported"), so the image's root filesystem runs under
# chroot, sharing the host's network; the image itself is a plain OCI image.
port=$((20000 + RANDOM % 20000))
run=$(buildah from "$tag")
trap 'kill $pid 2>/dev/null || true; buildah rm "$ctr" "$run" >/dev/null 2>&1 || true' EXIT
buildah run --isolation chroot "$run" -- /usr/local/bin/claimgate demo \
  --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1))" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$((port + 1))/readyz" 2>/dev/null; then
    echo "build-image: the container answers /readyz" >&2
    exit 0
  fi
  sleep 0.1
done
echo "build-image: the container did not answer /readyz" >&2
exit 1
