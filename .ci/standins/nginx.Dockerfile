# Stand-in for nginx:1.27-alpine (Debian's nginx, plus wget for the compose healthcheck), built
# only when the official image cannot be pulled. Same paths: /etc/nginx/nginx.conf.
FROM sse-gateway-ci/bookworm-minbase
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nginx wget \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/*
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
