# Shared settings and helpers of the test-bed scripts (sourced, not run).
# The names below are what the tests, the demo and the DAGs use; tests read them from bed.env.

if [ "$(id -u)" = 0 ]; then
  BED_DIR=${DOCKER_DELIVERY_BED_DIR:-/var/lib/docker-delivery-bed}
else
  BED_DIR=${DOCKER_DELIVERY_BED_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/docker-delivery-bed}
fi
BED_REGISTRY=${DOCKER_DELIVERY_BED_REGISTRY:-127.0.0.1:5000}
BED_DEBIAN_IMAGE=docker-delivery-bed/debian:bookworm
BED_PYTHON_IMAGE=docker-delivery-bed/python:3
BED_HAPROXY_IMAGE=docker-delivery-bed/haproxy:lts

say() { printf '[bed] %s\n' "$*"; }
die() { printf '[bed] error: %s\n' "$*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root; run as root or start Docker yourself"; }

docker_answers() { docker info >/dev/null 2>&1; }
registry_answers() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$BED_REGISTRY/v2/")" = 200 ]
}

wait_for() { # what seconds command...
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || { say "$what did not answer within ${seconds}s"; return 1; }
    sleep 0.5
  done
}

apt_updated=""
apt_install() {
  need_root "apt-get install $*"
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

write_env() {
  cat >"$BED_DIR/bed.env" <<EOF
DOCKER_DELIVERY_BED_DIR=$BED_DIR
DOCKER_DELIVERY_BED_REGISTRY=$BED_REGISTRY
DOCKER_DELIVERY_BED_REGISTRY_LOG=$BED_DIR/registry/registry.log
DOCKER_DELIVERY_BED_PYTHON_IMAGE=$BED_PYTHON_IMAGE
DOCKER_DELIVERY_BED_HAPROXY_IMAGE=$BED_HAPROXY_IMAGE
EOF
}
