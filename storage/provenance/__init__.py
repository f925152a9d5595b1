"""Provenance: the loop's datasets, predictions, models, drift decisions and retraining runs as
store records with typed dependencies, and their lineage as text or W3C PROV-JSON.

Call these from flows with a ``StoreClient`` (``storage.federation.client``); each returns the
new record's id (``"d/<n>"``). Dependencies point from the new record to what it came from:

- ``record_dataset(client, path)``                     -> a Zarr dataset (``der`` optional sources),
  with ``dataset_summary(path)`` as searchable metadata; ``find_dataset_record(client, path)``
- ``record_prediction(client, dataset=, model=)``      -> predictions ``der`` frames and model
- ``record_model(client, version=, training_data=, parent=)`` -> ``der`` data, ``ver`` parent
- ``record_decision(client, dataset=, frame_start=, frame_end=, detected=, action=, scores=)``
- ``record_training_run(client, training_data=, parent_model=)`` -> ``der`` its inputs
- ``lineage_text(client, ref)`` / ``to_prov_json(client.lineage(ref))``
"""

from storage.provenance.prov_json import lineage_text, to_prov_json
from storage.provenance.records import (
    SCHEMAS,
    dataset_summary,
    ensure_schemas,
    find_dataset_record,
    record_dataset,
    record_decision,
    record_model,
    record_prediction,
    record_training_run,
)

__all__ = [
    "SCHEMAS",
    "dataset_summary",
    "ensure_schemas",
    "find_dataset_record",
    "lineage_text",
    "record_dataset",
    "record_decision",
    "record_model",
    "record_prediction",
    "record_training_run",
    "to_prov_json",
]
