# Stand-in for redis:7-alpine (Debian's Redis 7), built only when the official image cannot be pulled.
FROM sse-gateway-ci/bookworm-minbase
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
