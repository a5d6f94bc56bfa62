"""The ledger: deployment records, the file they are appended to, and delivery metrics.

``Ledger(path).record(DeploymentRecord(...))`` at the end of each delivery attempt;
``delivery_metrics(Ledger(path).records(), now=...)`` for the four DORA metrics.

This is pure domain code: it must never import airflow.
"""

from docker_delivery.ledger.errors import InvalidRecord, LedgerError
from docker_delivery.ledger.metrics import DeliveryMetrics, delivery_metrics
from docker_delivery.ledger.records import DeploymentRecord
from docker_delivery.ledger.store import Ledger, ledger_path

__all__ = [
    "DeliveryMetrics",
    "DeploymentRecord",
    "InvalidRecord",
    "Ledger",
    "LedgerError",
    "delivery_metrics",
    "ledger_path",
]
