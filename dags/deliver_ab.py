"""Airflow DAG deliver_ab: its pipeline spec is pipelines/ab.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "ab.yaml")
