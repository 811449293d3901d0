# Starts the local services the integration tests talk to, each only if it is not already up.
# Sourced by test.sh; functions only.

# start_rabbitmq: a broker on 127.0.0.1:5672 with guest/guest.
start_rabbitmq() {
  if port_open 5672; then return 0; fi
  say "starting rabbitmq-server"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do
    if port_open 5672 && rabbitmqctl -q status >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  say "rabbitmq-server did not come up on 127.0.0.1:5672"
  exit 1
}

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
