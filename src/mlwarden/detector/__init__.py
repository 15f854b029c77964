"""The detector: one process per ObservedModel that receives the sidecars' records and checks them.

ingest (the wire format of records), core (windows, the reference summary and the checks),
alerts (hysteresis and evidence), persist and store (the stored reference), reporter (the
ObservedModel's status), cloudevents, and service (the HTTP process that ties them together).
"""
