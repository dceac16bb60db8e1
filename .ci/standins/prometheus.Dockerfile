# Stand-in for prom/prometheus:v2.55.1 (Debian's prometheus, plus wget as busybox gives the
# official image), built only when the official image cannot be pulled. Same entrypoint
# arguments, config path, data path and user as the official image.
FROM sse-gateway-ci/bookworm-minbase
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
VOLUME /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
