# syntax=docker/dockerfile:1
# Build a wheel in a throwaway stage, install only the wheel in a slim runtime stage, run as non-root.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# With the redis extra: replicas sharing rate limits (rate_limits.storage: redis://...) need it.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[redis]"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/mcpgw mcpgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /home/mcpgw
EXPOSE 12006
ENTRYPOINT ["mcpgw"]
CMD ["serve", "/config/proxy.yaml"]
