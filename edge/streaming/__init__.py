"""The device on Kafka: a sink that streams predictions, a follower that takes model updates, and the device process. May import edge.wire and edge.serving."""
