"""Airflow DAG deliver_rolling: its pipeline spec is pipelines/rolling.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "rolling.yaml")
