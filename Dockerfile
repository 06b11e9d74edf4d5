# The driftgate worker (and every other command): docker-compose.yml builds it.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY estimators ./estimators
COPY monitor ./monitor
RUN pip install . && useradd --create-home --uid 10001 driftgate
# Not root: the worker needs no privilege (its state is in Redis, its log in Kafka).
USER driftgate
# Metrics and the HTTP gate API (DRIFTGATE_METRICS_PORT); compose binds it on 0.0.0.0.
EXPOSE 9108
ENTRYPOINT ["driftgate"]
CMD ["worker"]
