"""The ledger: deployment records and incidents in a SQL database, and the delivery metrics.

``Ledger(location).record(DeploymentRecord(...))`` at the end of each delivery attempt;
``delivery_metrics(Ledger(location), now=...)`` for DORA's five metrics and their levels.

This is pure domain code: it must never import airflow.
"""

from docker_delivery.ledger.errors import InvalidRecord, LedgerError
from docker_delivery.ledger.metrics import DeliveryMetrics, delivery_metrics, metrics_report
from docker_delivery.ledger.records import DeploymentRecord, Incident
from docker_delivery.ledger.store import ImportResult, Ledger, default_location, ledger_url

__all__ = [
    "DeliveryMetrics",
    "DeploymentRecord",
    "ImportResult",
    "Incident",
    "InvalidRecord",
    "Ledger",
    "LedgerError",
    "default_location",
    "delivery_metrics",
    "ledger_url",
    "metrics_report",
]
