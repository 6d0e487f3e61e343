"""Broker-side stream services: the processor with its online model, the event store and the drift responder. May import cloud.ml, cloud.stack and edge."""
