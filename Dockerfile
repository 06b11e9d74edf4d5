FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY estimators ./estimators
COPY monitor ./monitor
RUN pip install --no-cache-dir .
EXPOSE 9108
ENTRYPOINT ["driftgate"]
CMD ["worker"]
