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
# The Airflow stack (docker-compose.yml): PostgreSQL and Redis, and the base the stack's Airflow
# image is built on (the bed's Python, trusting this machine's CA bundle for pip's downloads).
BED_POSTGRES_IMAGE=docker-delivery-bed/postgres:15
BED_REDIS_IMAGE=docker-delivery-bed/redis:7
BED_AIRFLOW_BASE_IMAGE=docker-delivery-bed/python-ca:3
# The demo app's base where its build cannot reach a package mirror (the remote machine).
BED_DEMO_BASE_IMAGE=docker-delivery-bed/python-pg:3
# PostgreSQL for migrations: a cluster of the bed's own (not the distribution's), data under
# $BED_PG_DIR, reached from the host on 127.0.0.1, from containers on the docker0 gateway and
# from the remote machine's containers on this machine's end of the veth.
BED_PG_DIR=$BED_DIR/postgres
BED_PG_PORT=${DOCKER_DELIVERY_BED_POSTGRES_PORT:-55432}
BED_PG_USER=demo
BED_PG_DB=demo
BED_PG_CONTAINER_HOST=""  # set by `up`: the docker0 gateway address
# MariaDB (MySQL-compatible) for the ledger's tests against MySQL: a server of the bed's own, data
# under $BED_MYSQL_DIR, on 127.0.0.1 only. User `ledger` (password in a file) may create databases.
BED_MYSQL_DIR=$BED_DIR/mariadb
BED_MYSQL_PORT=${DOCKER_DELIVERY_BED_MYSQL_PORT:-53306}
BED_MYSQL_USER=ledger
# The "remote" machine: a network namespace joined to this one by a veth pair, running a second
# dockerd with TLS on tcp 2376 (certificates made by the bed). Its own addresses and its
# containers' subnets are private to the bed; the host holds `unreachable` routes for the
# subnets, so that nothing aimed at them can leave this machine by the default route.
BED_REMOTE_NS=dd-remote
BED_REMOTE_DIR=$BED_DIR/remote
BED_REMOTE_HOST_IP=10.231.0.1    # this machine's end of the veth (the Swarm manager advertises it)
BED_REMOTE_IP=10.231.0.2         # the remote machine
BED_REMOTE_NET=10.231.0.0/24
BED_REMOTE_PORT=2376
BED_REMOTE_BIP=10.233.0.1/24     # the remote engine's default bridge (in BED_REMOTE_BRIDGE_NET)
BED_REMOTE_BRIDGE_NET=10.233.0.0/24
BED_REMOTE_POOL=10.234.0.0/16    # its other local networks
BED_SWARM_POOL=10.232.0.0/16     # the Swarm's overlay networks
BED_PG_BIN=""             # set by `up`: the folder of PostgreSQL's programs

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
DOCKER_DELIVERY_BED_STACK_POSTGRES_IMAGE=$BED_POSTGRES_IMAGE
DOCKER_DELIVERY_BED_STACK_REDIS_IMAGE=$BED_REDIS_IMAGE
DOCKER_DELIVERY_BED_STACK_BASE_IMAGE=$BED_AIRFLOW_BASE_IMAGE
DOCKER_DELIVERY_BED_STACK_REGISTRY=$BED_REMOTE_HOST_IP:${BED_REGISTRY##*:}
DOCKER_DELIVERY_BED_STACK_DEMO_BASE_IMAGE=$BED_DEMO_BASE_IMAGE
DOCKER_DELIVERY_BED_STACK_POSTGRES_HOST=$BED_REMOTE_HOST_IP
DOCKER_DELIVERY_BED_POSTGRES_HOST=127.0.0.1
DOCKER_DELIVERY_BED_POSTGRES_CONTAINER_HOST=$BED_PG_CONTAINER_HOST
DOCKER_DELIVERY_BED_POSTGRES_PORT=$BED_PG_PORT
DOCKER_DELIVERY_BED_POSTGRES_USER=$BED_PG_USER
DOCKER_DELIVERY_BED_POSTGRES_DB=$BED_PG_DB
DOCKER_DELIVERY_BED_POSTGRES_PASSWORD_FILE=$BED_PG_DIR/password
DOCKER_DELIVERY_BED_POSTGRES_BIN=$BED_PG_BIN
DOCKER_DELIVERY_BED_MYSQL_HOST=127.0.0.1
DOCKER_DELIVERY_BED_MYSQL_PORT=$BED_MYSQL_PORT
DOCKER_DELIVERY_BED_MYSQL_USER=$BED_MYSQL_USER
DOCKER_DELIVERY_BED_MYSQL_PASSWORD_FILE=$BED_MYSQL_DIR/password
DOCKER_DELIVERY_BED_REMOTE_URL=https://$BED_REMOTE_IP:$BED_REMOTE_PORT
DOCKER_DELIVERY_BED_REMOTE_TLS=$BED_REMOTE_DIR/tls
DOCKER_DELIVERY_BED_REMOTE_HOST=$BED_REMOTE_IP
DOCKER_DELIVERY_BED_REMOTE_NET=$BED_REMOTE_NET
DOCKER_DELIVERY_BED_REMOTE_PRIVATE_NETS=$BED_REMOTE_BRIDGE_NET,$BED_REMOTE_POOL,$BED_SWARM_POOL
EOF
}

# --- PostgreSQL helpers (up and down) -------------------------------------------------------
pg_find_bin() { # prints the folder of initdb/pg_ctl/postgres; PostgreSQL 15 preferred
  local dir
  for dir in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  return 1
}

pg_os_user() { # the system user the cluster runs as: postgres when root, else oneself
  if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}

pg_as_owner() { # command...: run as the cluster's system user (initdb refuses to run as root)
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# --- MariaDB helpers (up and down) ----------------------------------------------------------
mysql_find_daemon() { # prints the path of mariadbd (in /usr/sbin, often not on a user's PATH)
  local path
  for path in "$(command -v mariadbd 2>/dev/null)" /usr/sbin/mariadbd; do
    if [ -n "$path" ] && [ -x "$path" ]; then echo "$path"; return 0; fi
  done
  return 1
}

mysql_os_user() { # the system user the server runs as: mysql when root, else oneself
  if [ "$(id -u)" = 0 ]; then echo mysql; else id -un; fi
}

mysql_socket() { echo "$BED_MYSQL_DIR/run/mariadb.sock"; }

mysql_admin() { # mariadb-admin ... as the superuser of the same name as oneself (unix_socket)
  mariadb-admin --no-defaults --socket="$(mysql_socket)" -u "$(id -un)" "$@"
}

mysql_answers() { mysql_admin --connect-timeout=2 ping >/dev/null 2>&1; }

# --- The remote machine's engine (up and down) ----------------------------------------------
remote_docker() { # docker ... against the remote engine, over TLS
  DOCKER_HOST=tcp://$BED_REMOTE_IP:$BED_REMOTE_PORT DOCKER_TLS_VERIFY=1 \
    DOCKER_CERT_PATH=$BED_REMOTE_DIR/tls docker "$@"
}
remote_answers() { remote_docker info >/dev/null 2>&1; }
in_remote_ns() { nsenter --net="/var/run/netns/$BED_REMOTE_NS" "$@"; }
