#!/bin/sh
# foundrypf on the emulator's namespace hosts: Mithril's port forwarder, with
# its command line. `foundrypf PORT` makes PORT at the host's public address
# lead to the host's own 127.0.0.1:PORT for as long as it runs (in the
# foreground, as under Mithril's `foundrypf@PORT` unit); `foundrypf -d PORT`
# closes the port again and ends its forwarder. Ports 80, 443 and
# 1024-65535 only, as on Mithril. Needs root.
#
# The emulator boots every host with the nftables table `inet mithril_edge`
# in its network namespace, Mithril's network edge: from outside, only SSH
# and the ports in its `forwarded` set get in, the latter led to 127.0.0.1.
# This adds the port to that set and takes it out again.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
TABLE='inet mithril_edge'
# One pid file per open port; /run starts empty at every boot, as the
# forwarders do.
PIDS=/run/foundrypf

fail() {
  echo "foundrypf: $*" >&2
  exit 1
}

usage() {
  echo 'usage: foundrypf PORT | foundrypf -d PORT' >&2
  exit 2
}

# Refuses anything but a port Mithril forwards.
check_port() {
  case "$1" in
    '' | 0* | *[!0-9]*) fail "'$1' is not a port number" ;;
  esac
  if [ "${#1}" -le 5 ] && { [ "$1" -eq 80 ] || [ "$1" -eq 443 ] ||
      { [ "$1" -ge 1024 ] && [ "$1" -le 65535 ]; }; }; then
    return 0
  fi
  fail "port $1 cannot be opened: Mithril forwards ports 80, 443 and 1024-65535 only"
}

forward() {
  port=$1
  check_port "$port"
  mkdir -p "$PIDS"
  if [ -f "$PIDS/$port" ] && kill -0 "$(cat "$PIDS/$port")" 2>/dev/null; then
    fail "port $port is already forwarded (pid $(cat "$PIDS/$port"))"
  fi
  nft add element $TABLE forwarded "{ $port }" || fail "could not open port $port"
  echo $$ >"$PIDS/$port"
  trap stop TERM INT HUP
  echo "foundrypf: port $port at this host's public address leads to 127.0.0.1:$port"
  while :; do
    sleep 3600 &
    sleeper=$!
    wait "$sleeper"
  done
}

# The forwarder's end: a signal, or `foundrypf -d` of its port.
stop() {
  kill "$sleeper" 2>/dev/null
  nft delete element $TABLE forwarded "{ $port }" 2>/dev/null
  rm -f "$PIDS/$port"
  exit 0
}

close() {
  check_port "$1"
  nft delete element $TABLE forwarded "{ $1 }" 2>/dev/null
  if [ -f "$PIDS/$1" ]; then
    kill "$(cat "$PIDS/$1")" 2>/dev/null
    rm -f "$PIDS/$1"
  fi
  echo "foundrypf: port $1 closed"
}

case "$#:${1:-}" in
  2:-d) close "$2" ;;
  1:-*) usage ;;
  1:*) forward "$1" ;;
  *) usage ;;
esac
