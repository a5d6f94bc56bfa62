"""Airflow DAG deliver_shop: a release of two services, pipelines/shop/release.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "shop" / "release.yaml")
