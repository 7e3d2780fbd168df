# syntax=docker/dockerfile:1
# Build a wheel in a throwaway stage, install only the wheel in a slim runtime stage, run as non-root.
# CPython 3.11: the gateway spends 10% less CPU per call on it than on 3.12, 5% less than on 3.13 (docs/benchmarks.md).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# With the redis extra: replicas sharing rate limits (rate_limits.storage: redis://...) need it.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[redis]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/mcpgw mcpgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /home/mcpgw
EXPOSE 12006
ENTRYPOINT ["mcpgw"]
CMD ["serve", "/config/proxy.yaml"]
