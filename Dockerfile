# Airflow with the docker-delivery provider installed from this source tree: the image of every
# Airflow service in docker-compose.yml.
#
#   docker build -t docker-delivery/airflow .                  # on Airflow's official image
#   docker build --build-arg BASE_IMAGE=<a Debian image with python3> -t ... .
#
# On a base without Airflow (where Airflow's image cannot be pulled, as on the test bed), Airflow
# and its Celery, PostgreSQL and Redis extras are installed into /opt/airflow-venv, pinned by
# airflow-image/constraints.txt when present, and the user airflow (uid 50000, group 0) is made, as in
# Airflow's image.
ARG BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${BASE_IMAGE}
ARG AIRFLOW_VERSION=3.3.2
USER root
COPY airflow-image/install-airflow.sh airflow-image/constraints.tx[t] /tmp/docker-delivery/
RUN AIRFLOW_VERSION="$AIRFLOW_VERSION" sh /tmp/docker-delivery/install-airflow.sh
ENV PATH=/opt/airflow-venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow
COPY --chown=50000:0 pyproject.toml README.md /opt/docker-delivery/
COPY --chown=50000:0 provider /opt/docker-delivery/provider
USER 50000
RUN pip install --no-cache-dir --no-deps /opt/docker-delivery \
 && pip check >/dev/null \
 && python -c "import docker_delivery, airflow.providers.celery" \
 && mkdir -p /opt/airflow/logs /opt/airflow/config /opt/airflow/docker-delivery
# (A new named volume mounted on those folders starts with their owner: the user airflow.)
WORKDIR /opt/airflow
