#!/usr/bin/env bash
# The real image test: builds the Dockerfile with podman and runs the server inside the
# image, then talks to it from the host. No Docker engine is needed:
#   1. base image: `debootstrap --variant=minbase bookworm` from the Debian mirror the
#      machine's apt sources name, imported under the exact name of the Dockerfile's FROM
#      (reused when it already exists; NORMSERVE_REBUILD_BASE=1 makes it again);
#   2. `podman build --isolation=chroot --network=host --pull=never`;
#   3. the image's entrypoint started with `buildah run --isolation=chroot` (podman run
#      cannot set rlimits in this sandbox), with free loopback ports from the environment;
#   4. from the host: health, list, a real prediction (normserve-cli), /metrics, the
#      training endpoint (token checked); inside the image: the HEALTHCHECK command, no
#      unresolved shared library, no -dev package, the non-root user;
#   5. SIGTERM: the server drains and exits 0.
# Fails loudly (exit 1, message on stderr) on any missing tool or failed step.
#
# Usage (root): tests/deploy/image_test.sh [--from-head]
#   --from-head   build from `git archive HEAD` instead of the working tree
# Environment: NORMSERVE_CLI (host normserve-cli; default build/tools/normserve-cli),
#   NORMSERVE_PY_STUBS (host Python stubs; default build/python),
#   NORMSERVE_IMAGE (tag, default localhost/normserve:test), NORMSERVE_REBUILD_BASE=1,
#   NORMSERVE_IMAGE_WORKDIR (scratch dir, default a new mktemp dir).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
IMAGE="${NORMSERVE_IMAGE:-localhost/normserve:test}"
CLI="${NORMSERVE_CLI:-$ROOT/build/tools/normserve-cli}"
FROM_HEAD=0
[[ "${1:-}" == "--from-head" ]] && FROM_HEAD=1

PY=/usr/bin/python3  # Debian's Python with python3-grpcio (the project's test Python)
die() { echo "IMAGE TEST FAILED: $*" >&2; exit 1; }
T0=$(date +%s)
phase_start=$T0
phase() {  # phase NAME: print how long the previous phase took, start the next
  local now; now=$(date +%s)
  echo "=== [$((now - T0))s total, +$((now - phase_start))s] $*"
  phase_start=$now
}

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap, podman and buildah with chroot isolation)"
for tool in podman buildah debootstrap git; do
  command -v "$tool" >/dev/null || die "$tool not installed (apt-get install podman buildah debootstrap)"
done
[[ -x "$PY" ]] || die "$PY not found (Debian python3 with python3-grpcio)"
[[ -x "$CLI" ]] || die "host normserve-cli not found at $CLI (build the project first or set NORMSERVE_CLI)"

WORK="${NORMSERVE_IMAGE_WORKDIR:-$(mktemp -d /tmp/normserve-image.XXXXXX)}"
mkdir -p "$WORK"
CTR=""
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    sleep 2
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  [[ -n "$CTR" ]] && buildah rm "$CTR" >/dev/null 2>&1 || true
  [[ -z "${NORMSERVE_IMAGE_WORKDIR:-}" ]] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

# --- 1. base image ------------------------------------------------------------------
BASE="$(awk 'toupper($1) == "FROM" { print $2; exit }' "$ROOT/Dockerfile")"
[[ -n "$BASE" ]] || die "no FROM line in $ROOT/Dockerfile"
phase "base image $BASE"
if [[ "${NORMSERVE_REBUILD_BASE:-0}" != 1 ]] && podman image exists "$BASE"; then
  echo "reusing local $BASE ($(podman image inspect --format '{{.Id}}' "$BASE" | cut -c1-12))"
else
  # The first Debian mirror the machine's apt sources name for bookworm (one-line .list
  # format or deb822 .sources); never a host written into the repository.
  MIRROR="$("$PY" - <<'PY'
import glob, re
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
      + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for para in re.split(r"\n\s*\n", text):
            fields = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and "bookworm" in fields.get("suites", []) \
               and fields.get("enabled", ["yes"])[0] != "no":
                print(fields["uris"][0]); raise SystemExit
    else:
        for line in text.splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            # deb [options] URI SUITE COMPONENTS...
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                print(words[1]); raise SystemExit
PY
)"
  [[ -n "$MIRROR" ]] || die "no Debian bookworm mirror in /etc/apt/sources.list(.d)"
  echo "debootstrap --variant=minbase bookworm from $MIRROR"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/archives/"*.deb
  tar -C "$WORK/rootfs" --numeric-owner -c . | podman import - "$BASE" >/dev/null \
    || die "podman import failed"
  rm -rf "$WORK/rootfs"
  echo "imported $BASE"
fi

# --- 2. podman build ----------------------------------------------------------------
phase "podman build $IMAGE"
CONTEXT="$ROOT"
if ((FROM_HEAD)); then
  CONTEXT="$WORK/context"
  rm -rf "$CONTEXT" && mkdir -p "$CONTEXT"
  git -C "$ROOT" archive HEAD | tar -x -C "$CONTEXT"
  echo "context: git archive HEAD ($(git -C "$ROOT" rev-parse --short HEAD))"
fi
podman build --isolation=chroot --network=host --pull=never --format docker \
  --build-arg BUILD_JOBS="$(nproc)" -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT" \
  > "$WORK/build.log" 2>&1 || { tail -60 "$WORK/build.log" >&2; die "podman build failed (log: $WORK/build.log)"; }
tail -3 "$WORK/build.log"
SIZE_MB=$(( $(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
echo "image $IMAGE: ${SIZE_MB} MB"

# --- 3. image configuration -----------------------------------------------------------
phase "image configuration"
USER_CFG="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
[[ -n "$USER_CFG" && "$USER_CFG" != root* && "$USER_CFG" != 0* ]] || die "image runs as root (User='$USER_CFG')"
PORTS="$(podman image inspect --format '{{json .Config.ExposedPorts}}' "$IMAGE")"
for p in 8001 8002 8003; do [[ "$PORTS" == *"$p/tcp"* ]] || die "port $p not exposed: $PORTS"; done
VOLS="$(podman image inspect --format '{{json .Config.Volumes}}' "$IMAGE")"
[[ "$VOLS" == *repository* && "$VOLS" == *state* ]] || die "volumes missing: $VOLS"
HC="$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")"
[[ "$HC" == *normserve-cli* ]] || die "no HEALTHCHECK through normserve-cli: $HC"
HC_CMD="$(podman image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE" \
  | "$PY" -c 'import json,sys; t=json.load(sys.stdin); print(t[1] if t[0]=="CMD-SHELL" else " ".join(t[1:]))')"
echo "user=$USER_CFG ports=$PORTS volumes=$VOLS"
echo "healthcheck: $HC_CMD"

CTR="$(buildah from --pull-never "$IMAGE")"
MISSING="$(buildah run --isolation=chroot "$CTR" -- sh -c \
  'ldd /usr/local/bin/normserve /usr/local/bin/normserve-cli | grep "not found" || true')"
[[ -z "$MISSING" ]] || die "unresolved libraries in the runtime image: $MISSING"
DEV="$(buildah run --isolation=chroot "$CTR" -- sh -c 'dpkg -l | awk "/^ii/ && \$2 ~ /-dev(:|$)/ {print \$2}"')"
[[ -z "$DEV" ]] || die "-dev packages in the runtime image: $DEV"

# --- 4. run the server inside the image ---------------------------------------------
phase "server in the image (buildah run --isolation=chroot --network=host)"
read -r PORT MPORT TPORT < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
# setsid: the server gets its own process group, so cleanup reaches every process.
setsid buildah run --isolation=chroot --network=host \
  --env NORMSERVE_PORT="$PORT" --env NORMSERVE_METRICS_PORT="$MPORT" \
  --env NORMSERVE_TRAINING_PORT="$TPORT" --env NORMSERVE_TRAINING_TOKEN=image-test-token \
  --env NORMSERVE_DRAIN_SECONDS=5 \
  "$CTR" -- /usr/local/bin/normserve-entrypoint > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
ok=0
for _ in $(seq 1 120); do
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "server exited early"; }
  if "$CLI" --server="127.0.0.1:$PORT" --timeout_s=2 health >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.5
done
((ok)) || { cat "$WORK/server.log" >&2; die "server in the image never became healthy on port $PORT"; }
phase "host -> image: health, list, predict, metrics"
"$CLI" --server="127.0.0.1:$PORT" health | tee "$WORK/health.txt"
grep -q SERVING "$WORK/health.txt" || die "health is not SERVING"
"$CLI" --server="127.0.0.1:$PORT" health fashion_bn_cnn | grep -q SERVING || die "fashion_bn_cnn not SERVING"
"$CLI" --server="127.0.0.1:$PORT" list | tee "$WORK/list.txt"
grep -q fashion_bn_cnn "$WORK/list.txt" || die "default repository not served"
# A 28x28 grey image (a bright rectangle on black), the shape of Fashion-MNIST.
"$PY" -c '
import sys
px = bytes(200 if 6 <= r < 22 and 9 <= c < 19 else 0 for r in range(28) for c in range(28))
sys.stdout.buffer.write(b"P5\n28 28\n255\n" + px)' > "$WORK/item.pgm"
"$CLI" --server="127.0.0.1:$PORT" predict fashion_bn_cnn --input="$WORK/item.pgm" --top=3 \
  | tee "$WORK/predict.txt" || die "prediction failed"
grep -q "\[1,10\]" "$WORK/predict.txt" || die "unexpected prediction output"
"$PY" - "$MPORT" <<'PY' || die "metrics endpoint"
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
ok = [l for l in text.splitlines() if l.startswith("normserve_requests_total") and 'model="fashion_bn_cnn"' in l]
assert ok, "no normserve_requests_total for fashion_bn_cnn"
print("metrics:", ok[0])
PY
# The training endpoint listens (the entrypoint binds it to 0.0.0.0 in the container) and
# checks the bearer token; with the host's Python stubs, ListSessions is called for real.
STUBS="${NORMSERVE_PY_STUBS:-$ROOT/build/python}"
"$PY" - "$TPORT" "$STUBS" <<'PY' || die "training endpoint in the image"
import os, socket, sys
port, stubs = int(sys.argv[1]), sys.argv[2]
socket.create_connection(("127.0.0.1", port), timeout=5).close()
if not os.path.exists(os.path.join(stubs, "normserve/v1/training_pb2_grpc.py")):
    print(f"training port {port}: listening (no Python stubs at {stubs} for an RPC)")
    raise SystemExit
sys.path.insert(0, stubs)
import grpc
from normserve.v1 import training_pb2 as t, training_pb2_grpc as tg
stub = tg.TrainingServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
try:
    stub.ListSessions(t.ListSessionsRequest(), timeout=10)
    raise SystemExit("ListSessions without a token succeeded")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
stub.ListSessions(t.ListSessionsRequest(), timeout=10,
                  metadata=[("authorization", "Bearer image-test-token")])
print(f"training port {port}: UNAUTHENTICATED without the token, ListSessions with it")
PY
# The image's own HEALTHCHECK command, run inside the image against the running server.
buildah run --isolation=chroot --network=host --env NORMSERVE_PORT="$PORT" "$CTR" -- \
  sh -c "$HC_CMD" || die "the image's HEALTHCHECK command failed"
echo "HEALTHCHECK inside the image: ok"

# --- 5. graceful stop -------------------------------------------------------------------
phase "SIGTERM"
SRV_PID="$(pgrep -g "$SERVER_PID" -x normserve | head -1 || true)"
[[ -n "$SRV_PID" ]] || die "no normserve process in the server's process group"
[[ "$(stat -c %u /proc/$SRV_PID)" != 0 ]] || die "normserve runs as root inside the image"
kill -TERM "$SRV_PID"
for _ in $(seq 1 40); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.25; done
if kill -0 "$SERVER_PID" 2>/dev/null; then die "server did not stop within 10 s of SIGTERM"; fi
wait "$SERVER_PID" && rc=0 || rc=$?
[[ $rc == 0 ]] || { tail -20 "$WORK/server.log" >&2; die "server exited $rc after SIGTERM"; }
SERVER_PID=""
phase "done"
echo "IMAGE TEST PASSED in $(( $(date +%s) - T0 )) s (image $IMAGE, ${SIZE_MB} MB)"
