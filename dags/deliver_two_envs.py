"""Airflow DAG deliver_two_envs: its pipeline spec is pipelines/two_envs.yaml."""

from pathlib import Path

from docker_delivery.templates import delivery_pipeline

dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "two_envs.yaml")
