"""What the tests share, one module per concept: the real bed's load generator and demo app
processes (:mod:`.loadgen`), removing what a test's service left (:mod:`.cleanup`), releases,
health checks and routers for deployment tests (:mod:`.deploy`), running a pipeline DAG in
Airflow as its services would (:mod:`.pipeline`), and a log collector (:mod:`.logs`)."""
