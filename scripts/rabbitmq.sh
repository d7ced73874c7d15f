# A private RabbitMQ node for the Backbone tests (sourced after lib.sh, not
# run): Debian's rabbitmq-server on free ports, its files in $work/rabbitmq,
# never touching a system node. Needs root (the server's wrapper switches to
# the rabbitmq user).
#
#   rabbitmq_setup        installs rabbitmq-server when missing, writes the
#                         node's settings, a test CA and a server
#                         certificate, the start and stop scripts
#   "$rmq/start"          starts the node and returns once it is up
#   "$rmq/ctl ARGS..."    rabbitmqctl for the node
#   "$rmq/stop"           stops it cleanly (durable queues and persistent
#                         messages are kept for the next start)
#   rabbitmq_user         a user with a random password: sets $amqp_url, $amqps_url
#
# The node is stopped when the calling script exits.

rabbitmq_setup() {
  [ "$(id -u)" = 0 ] || fail "run as root: rabbitmq-server switches to the rabbitmq user"
  if ! command -v rabbitmq-server >/dev/null; then
    log "installing rabbitmq-server (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  rmq=$work/rabbitmq
  mkdir -p "$rmq"
  chmod 711 "$work" # the rabbitmq user reaches its directory through it
  rmq_port=$(free_port)
  rmq_tls_port=$(free_port)
  rmq_node="ctr-e2e-$$@localhost"

  # A CA of this run only, and a certificate for localhost signed by it.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ctr-relay test CA" \
    -keyout "$rmq/ca.key" -out "$rmq/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$rmq/server.key" -out "$rmq/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\n' >"$rmq/san.ext"
  openssl x509 -req -in "$rmq/server.csr" -CA "$rmq/ca.pem" -CAkey "$rmq/ca.key" \
    -CAcreateserial -days 2 -extfile "$rmq/san.ext" -out "$rmq/server.pem" 2>/dev/null

  cat >"$rmq/rabbitmq.conf" <<EOF
listeners.ssl.default = $rmq_tls_port
ssl_options.cacertfile = $rmq/ca.pem
ssl_options.certfile = $rmq/server.pem
ssl_options.keyfile = $rmq/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
  cat >"$rmq/env" <<EOF
export RABBITMQ_NODENAME=$rmq_node RABBITMQ_NODE_PORT=$rmq_port RABBITMQ_DIST_PORT=$(free_port)
export RABBITMQ_MNESIA_BASE=$rmq/mnesia RABBITMQ_LOG_BASE=$rmq/log RABBITMQ_PID_FILE=$rmq/pid
export RABBITMQ_FEATURE_FLAGS_FILE=$rmq/ff RABBITMQ_ENABLED_PLUGINS_FILE=$rmq/plugins
export RABBITMQ_CONFIG_FILE=$rmq/rabbitmq.conf
EOF
  cat >"$rmq/start" <<EOF
#!/bin/sh
. "$rmq/env"
rabbitmq-server >>"$rmq/out" 2>&1 &
server=\$!
for _ in \$(seq 1 120); do
  rabbitmqctl -q -n "$rmq_node" await_startup >/dev/null 2>&1 && exit 0
  kill -0 "\$server" 2>/dev/null || break
  sleep 1
done
echo "RabbitMQ did not start; see $rmq/out and $rmq/log" >&2
exit 1
EOF
  cat >"$rmq/stop" <<EOF
#!/bin/sh
. "$rmq/env"
rabbitmqctl -q -n "$rmq_node" stop "$rmq/pid" >/dev/null
EOF
  cat >"$rmq/ctl" <<EOF
#!/bin/sh
. "$rmq/env"
exec rabbitmqctl -q -n "$rmq_node" "\$@"
EOF
  chmod 755 "$rmq/start" "$rmq/stop" "$rmq/ctl"
  chown -R rabbitmq:rabbitmq "$rmq"
  chmod 755 "$rmq"
}

rabbitmq_ctl() { (. "$rmq/env" && rabbitmqctl -q -n "$rmq_node" "$@"); }

rabbitmq_user() {
  local password
  password=$(openssl rand -hex 16)
  rabbitmq_ctl add_user ctr-e2e "$password" >/dev/null
  rabbitmq_ctl set_permissions -p / ctr-e2e '.*' '.*' '.*' >/dev/null
  amqp_url="amqp://ctr-e2e:$password@127.0.0.1:$rmq_port/%2f"
  amqps_url="amqps://ctr-e2e:$password@localhost:$rmq_tls_port/%2f"
}

rabbitmq_cleanup() {
  if [ -n "${rmq:-}" ] && [ -f "$rmq/pid" ]; then
    "$rmq/stop" 2>/dev/null || kill -9 "$(cat "$rmq/pid")" 2>/dev/null || true
  fi
}
