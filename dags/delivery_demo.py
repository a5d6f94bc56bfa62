"""Airflow DAG delivery_demo: its pipeline spec is pipelines/delivery_demo.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "delivery_demo.yaml")
