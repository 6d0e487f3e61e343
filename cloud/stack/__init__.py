"""The services beside the kit: the embedded broker, the SuperLink, the compose stack, TLS and the doctor. May import edge."""
