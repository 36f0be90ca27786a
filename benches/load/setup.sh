# Shared by benches/load.sh and benches/instructions.sh (sourced, with
# $work, $up and the loadkit's files in $work/kit): the nginx upstream and
# the bench policy's issuer and first two routes.

user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
mkdir -p "$work/nginx"
nginx_conf() { # name workers body
  cat >"$work/nginx/$1.conf" <<EOF
$user_line
worker_processes $2;
daemon off;
pid $work/nginx/$1.pid;
error_log $work/nginx/$1.err warn;
events { worker_connections 8192; }
http {
  client_body_temp_path $work/nginx/$1-body;
  proxy_temp_path $work/nginx/$1-proxy;
  fastcgi_temp_path $work/nginx/$1-fcgi;
  uwsgi_temp_path $work/nginx/$1-uwsgi;
  scgi_temp_path $work/nginx/$1-scgi;
  keepalive_requests 10000000;
  $3
}
EOF
}
nginx_conf upstream 1 "
  access_log off;
  server {
    listen 127.0.0.1:$up;
    location = /jwks.json { default_type application/json; alias $work/kit/jwks.json; }
    location / { default_type text/plain; return 200 \"ok\n\"; }
  }"

# nginx as bare proxy to the upstream on PORT, access log on (keep-alive
# to the upstream, as claimgate): $work/nginx/proxy.conf.
nginx_proxy() { # workers port
  nginx_conf proxy "$1" "
  access_log $work/nginx/proxy-access.log;
  upstream app { server 127.0.0.1:$up; keepalive 128; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
}

# The bench policy's issuer, upstream, public route and the api route (a
# `role` rule, 4 claim headers), on stdout; callers append routes.
bench_policy() {
  cat <<EOF
issuers:
  bench:
    issuer: https://idp.bench.local
    audience: [bench-api]
    jwks_uri: http://127.0.0.1:$up/jwks.json
    allow_http: true
    algorithms: [RS256]
    unknown_kid_cooldown: 30s
    claims:
      roles: \$.roles
upstreams:
  app: http://127.0.0.1:$up
routes:
  - name: public
    match: { path: "/public/**" }
    upstream: app
    public: true
  - name: api
    match: { path: "/api/**", methods: [GET] }
    upstream: app
    allow: { role: orders }
    forward:
      X-User-Id: "{{ \$.sub }}"
      X-Tenant: "{{ \$.tenant }}"
      X-Plan: "{{ \$.plan }}"
      X-Email: "{{ \$.email }}"
EOF
}

# Starts the nginx upstream (its pid appended to $pids).
start_upstream() {
  /usr/sbin/nginx -c "$work/nginx/upstream.conf" -e "$work/nginx/upstream.err" &
  pids+=($!)
}

# Writes claimgate's process file, $work/cg/claimgate.yaml (listening on
# $cg, admin on $adm, policies in $work/cg/policies, JSON access log, no
# reload), each argument appended as a line.
cg_config() {
  mkdir -p "$work/cg/policies"
  {
    cat <<EOF
listen: 127.0.0.1:$cg
admin_listen: 127.0.0.1:$adm
policies: ./policies
log_format: json
reload: { watch: false, poll_interval: 0s }
EOF
    printf '%s\n' "$@"
  } >"$work/cg/claimgate.yaml"
}
