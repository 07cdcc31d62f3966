# PostgreSQL from Debian's packages, for hosts that cannot pull the official image
# (examples/deploy/build.sh --offline). It honours the official image's environment:
# POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB (read once, when the data directory is empty),
# keeps its data in /var/lib/postgresql/data, listens on 5432 and answers pg_isready.
ARG BASE_IMAGE=pe-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres /run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
USER postgres
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
