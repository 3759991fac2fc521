# syntax=docker/dockerfile:1
# cutover's container image: a build stage with the Rust toolchain, and a small runtime
# stage with the binary, the example config and a non-root user.
#
#   docker build -t cutover .
#   docker run --rm -p 8080:8080 -v "$PWD/my-config:/etc/cutover:ro" \
#       -v cutover-state:/var/lib/cutover cutover
#
# The build steps live in scripts/image-layout.sh, which tests/packaging.rs also runs on a
# machine without Docker, so what this file builds is tested. See docs/install.md.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/image-layout.sh /out

FROM debian:bookworm-slim
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can check it without a passwd file.
RUN groupadd --system --gid 10001 cutover \
 && useradd --system --uid 10001 --gid cutover --home-dir /var/lib/cutover \
        --no-create-home --shell /usr/sbin/nologin cutover
COPY --from=build /out/ /
RUN chown cutover:cutover /var/lib/cutover
# The state files (one per service) must outlive the container: mount a volume here.
VOLUME ["/var/lib/cutover"]
USER 10001:10001
WORKDIR /var/lib/cutover
# 8080 and 8443: the example config's listeners; 9901: the admin API and /metrics.
EXPOSE 8080 8443 9901
# No curl in the slim image: bash's /dev/tcp asks the admin API's /healthz (no token needed).
# Set CUTOVER_HEALTHCHECK_PORT when your config's admin.addr uses another port.
ENV CUTOVER_HEALTHCHECK_PORT=9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${CUTOVER_HEALTHCHECK_PORT} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM: stop accepting, let in-flight requests finish (limits.shutdown_grace), exit 0.
# Give `docker stop` a longer --time than shutdown_grace (30s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["cutover"]
CMD ["run", "-c", "/etc/cutover/cutover.yaml"]
