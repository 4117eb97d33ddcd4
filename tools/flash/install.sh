#!/bin/sh
# Install the H-Gen edge agent from this kit, offline: a venv under PREFIX, wheels only from ./wheelhouse.
#   sudo ./install.sh                      # /opt/hgen-agent, systemd unit enabled and started
#   PREFIX=$HOME/hgen ./install.sh --no-systemd
set -eu
KIT=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-/opt/hgen-agent}
PYTHON=${PYTHON:-python3}
AGENT_USER=${AGENT_USER:-$(id -un)}
SYSTEMD=1
[ "${1:-}" = "--no-systemd" ] && SYSTEMD=0

mkdir -p "$PREFIX/etc"
"$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --no-index --find-links "$KIT/wheelhouse" 'hgen[edge]'
cp -R "$KIT/bundle" "$KIT/keys" "$PREFIX/etc/"
[ -f "$PREFIX/etc/agent.yaml" ] || cp "$KIT/agent.yaml" "$PREFIX/etc/agent.yaml"
for private in "$PREFIX/etc/agent.yaml" "$PREFIX/etc/keys/device.key"; do  # the device's secret and TLS key
  [ -f "$private" ] || continue
  chmod 600 "$private"
  [ "$(id -u)" != 0 ] || chown "$AGENT_USER" "$private"  # readable by the agent's user only
done
"$PREFIX/venv/bin/hgen-agent" check --config "$PREFIX/etc/agent.yaml"

if [ "$SYSTEMD" = 1 ] && command -v systemctl >/dev/null 2>&1; then
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@USER@|$AGENT_USER|g" "$KIT/hgen-agent.service.in" \
    > /etc/systemd/system/hgen-agent.service
  systemctl daemon-reload
  systemctl enable --now hgen-agent.service
  echo "hgen-agent installed in $PREFIX and started (journalctl -u hgen-agent -f)"
else
  echo "hgen-agent installed in $PREFIX; run: $PREFIX/venv/bin/hgen-agent run --config $PREFIX/etc/agent.yaml"
fi
