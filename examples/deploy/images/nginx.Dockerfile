# nginx from Debian's packages, for hosts that cannot pull the official image
# (examples/deploy/build.sh --offline). Like nginx:1.27: the config at /etc/nginx/nginx.conf
# (bind-mounted by docker-compose), logs to the container's stdout/stderr, foreground.
ARG BASE_IMAGE=pe-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /etc/nginx/sites-enabled/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
