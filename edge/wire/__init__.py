"""What crosses the wire between devices and the cloud: event schemas, topic names, Kafka client settings. Imports nothing else of the kit."""
