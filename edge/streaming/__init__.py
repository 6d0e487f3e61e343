"""The device on Kafka: the sink (kafka_sink), the model-update follower (updates), its settings and the device process (python -m edge.streaming). May import edge.wire and edge.serving."""
