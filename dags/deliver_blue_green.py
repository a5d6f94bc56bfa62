"""Airflow DAG deliver_blue_green: its pipeline spec is pipelines/blue_green.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "blue_green.yaml")
