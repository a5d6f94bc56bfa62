"""The provider's Airflow UI plugin: the Deliveries view (:mod:`.deliveries`)."""
