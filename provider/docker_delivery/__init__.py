"""docker-delivery: an Apache Airflow provider for Docker-native continuous delivery."""

__version__ = "0.1.0"
