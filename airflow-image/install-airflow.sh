#!/bin/sh
# Dockerfile step: Airflow (with the extras docker-compose.yml uses) on a base that lacks it, and
# the provider's own dependencies on any base. Runs as root; the installs belong to uid 50000.
set -eu
here=/tmp/docker-delivery
extras="celery,postgres,redis,amazon,docker"
constraints=""
[ -f "$here/constraints.txt" ] && constraints="-c $here/constraints.txt"
if ! command -v airflow >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3-venv ca-certificates curl procps >/dev/null
  rm -rf /var/lib/apt/lists/*
  id airflow >/dev/null 2>&1 || useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow airflow
  mkdir -p /opt/airflow /opt/airflow-venv
  python3 -m venv /opt/airflow-venv
  /opt/airflow-venv/bin/pip install --no-cache-dir -q --upgrade "pip>=24"  # resolves far faster
  # shellcheck disable=SC2086
  /opt/airflow-venv/bin/pip install --no-cache-dir -q $constraints \
    "apache-airflow[$extras]==$AIRFLOW_VERSION"
  chown -R 50000:0 /opt/airflow /opt/airflow-venv
else
  # Airflow's image: its providers are installed as the user airflow.
  su airflow -s /bin/sh -c "pip install --no-cache-dir -q $constraints \
    apache-airflow==$AIRFLOW_VERSION apache-airflow-providers-amazon apache-airflow-providers-docker"
fi
