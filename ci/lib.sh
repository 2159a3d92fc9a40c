# shellcheck shell=bash
# Shell helpers shared by the ci/ start scripts (source it; it defines functions only).

# free_ports N [ADDR]: N distinct free TCP ports on ADDR (default 127.0.0.1),
# space-separated, all picked while held at once so they differ from each other
# (another process may still take one later).
free_ports() {
  /usr/bin/python3 - "$1" "${2:-127.0.0.1}" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind((sys.argv[2], 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# prop NAME VALUE: one Hadoop configuration property, for *-site.xml files.
prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }
