# Redis from Debian's packages, for hosts that cannot pull the official image
# (examples/deploy/build.sh --offline). Same interface as redis:7: `redis-server ARGS` as the
# command, data in /data, port 6379, redis-cli on the PATH.
ARG BASE_IMAGE=pe-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* \
 && install -d -o redis -g redis /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
USER redis
# Debian's default config binds 127.0.0.1 and daemonizes; the container serves the network
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--daemonize", "no", "--dir", "/data"]
