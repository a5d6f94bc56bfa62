"""Airflow DAG deliver_min_in_service: its pipeline spec is pipelines/min_in_service.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "min_in_service.yaml")
