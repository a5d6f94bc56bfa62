"""Airflow DAG deliver_ecs: its pipeline spec is pipelines/ecs.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "ecs.yaml")
