#!/bin/sh
# Install the H-Gen edge agent from this kit, offline: a venv under PREFIX, wheels only from ./wheelhouse.
#   sudo ./install.sh                      # /opt/hgen-agent, run by system user hgen, systemd unit (re)started
#   PREFIX=$HOME/hgen ./install.sh --no-systemd
# PREFIX/venv: the code (a link to PREFIX/venvs/v-XXXXXX); PREFIX/etc: agent.yaml, bundle/, keys/ (read-only for
# the agent); PREFIX/var: outbox, bundle store, jsonl results (the agent's user's, kept across installs). Installing
# a newer kit replaces the code (same version or not), agent.yaml (the previous one kept as
# agent.yaml.bak-<UTC time>), bundle/ and keys/, and restarts a running agent. Nothing is touched until the kit is
# found complete (BUILD_INFO, written last by build_kit.py, and the files installed here); the kit's code goes
# into a venv of its own and its config into PREFIX/.etc-new-XXXXXX, checked there by that code as the agent's
# user, then the config is swapped into PREFIX/etc with mv, checked again, and PREFIX/venv pointed at the new code
# last: a failure on the way puts the previous config back and leaves the previous code running. A unit stopped to
# move old state is started again when the install fails after stopping it.
# Environment: PREFIX, PYTHON (python3), AGENT_USER (hgen under systemd as root, else the installing user),
# UNIT_DIR (/etc/systemd/system).
set -eu
umask 022
KIT=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-/opt/hgen-agent}
PYTHON=${PYTHON:-python3}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
UNIT=hgen-agent.service
SYSTEMD=1
case "${1:-}" in
  --no-systemd) SYSTEMD=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-systemd]" >&2; exit 2 ;;
esac
command -v systemctl >/dev/null 2>&1 || SYSTEMD=0
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
if [ "$SYSTEMD" = 1 ] && [ "$IS_ROOT" = 1 ]; then
  AGENT_USER=${AGENT_USER:-hgen}
else
  AGENT_USER=${AGENT_USER:-$(id -un)}
fi

die() {
  echo "install.sh: $*" >&2
  exit 1
}

STAGE=""      # PREFIX/.etc-new-XXXXXX: the kit's config until it is swapped in (then the previous copies)
STOPPED=0     # 1 once this script stopped a running unit: a failure from then on starts it again
SWAPPED=""    # what swap_config moved into PREFIX/etc so far (a failure puts the previous copies back)
NEWVENV=""    # PREFIX/venvs/v-XXXXXX: this kit's code (removed after a failure before PREFIX/venv points at it)
OLDVENV=""    # what PREFIX/venv was (venvs/...) once it points at the new code: kept for a manual roll back
SWITCHED=0    # 1 once PREFIX/venv points at the new code
MOVED=""      # venvs/old-<time>: an older kit's PREFIX/venv folder moved aside for the link (put back on failure)

# On a failure: the previous agent.yaml, bundle/ and keys/ back in place, the staging folder and the new code
# gone (the previous code never left), a unit this script stopped started again.
on_exit() {
  status=$?
  trap - EXIT
  if [ "$status" != 0 ] && [ -n "$STAGE" ] && [ -n "$SWAPPED" ]; then
    for item in $SWAPPED; do
      if [ -e "$STAGE/.previous/$item" ]; then
        rm -rf "$PREFIX/etc/$item"
        mv "$STAGE/.previous/$item" "$PREFIX/etc/$item" || true
      fi
    done
  fi
  [ -z "$STAGE" ] || rm -rf "$STAGE"
  if [ "$status" != 0 ] && [ "$SWITCHED" = 0 ]; then
    rm -f "$PREFIX/venv.new"
    if [ -n "$MOVED" ] && [ ! -e "$PREFIX/venv" ] && [ ! -L "$PREFIX/venv" ]; then
      mv "$PREFIX/$MOVED" "$PREFIX/venv" || echo "install.sh: could not put $PREFIX/$MOVED back as $PREFIX/venv" >&2
    fi
    [ -z "$NEWVENV" ] || rm -rf "$NEWVENV"
  fi
  if [ "$status" != 0 ] && [ "$STOPPED" = 1 ]; then
    echo "install.sh: the install failed after stopping $UNIT: starting it again" >&2
    systemctl start "$UNIT" || echo "install.sh: could not start $UNIT again (systemctl status $UNIT)" >&2
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 1' HUP INT TERM

# The kit's TARGET ("aarch64 python3.11") against this device: its wheels run nowhere else.
check_device() {
  [ -f "$KIT/TARGET" ] || die "$KIT has no TARGET file: not a kit from tools/flash/build_kit.py"
  target=$(cat "$KIT/TARGET")
  kit_machine=${target%% *}
  kit_python=${target#* }
  machine=$(uname -m)
  [ "$machine" = "$kit_machine" ] || die "this kit is for $kit_machine, this device is $machine: build one with --target $machine"
  device_python=$("$PYTHON" -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null) \
    || die "cannot run $PYTHON (set PYTHON=...)"
  [ "$device_python" = "$kit_python" ] || die "this kit's wheels are for $kit_python, $PYTHON is $device_python: set PYTHON to a $kit_python"
}

# Everything install reads from the kit, before anything is touched: build_kit.py writes BUILD_INFO last, so a
# kit without it is a build cut short (or a copy of the kit that did not finish).
check_kit() {
  [ -f "$KIT/BUILD_INFO" ] || die "$KIT is incomplete (no BUILD_INFO, which build_kit.py writes last): build the kit again"
  for need in agent.yaml keys/signing.pub; do
    [ -s "$KIT/$need" ] || die "$KIT is incomplete (no $need): build the kit again"
  done
  [ -d "$KIT/bundle" ] && [ -n "$(ls -A "$KIT/bundle")" ] || die "$KIT is incomplete (no bundle/): build the kit again"
  [ "$SYSTEMD" = 0 ] || [ -s "$KIT/hgen-agent.service.in" ] \
    || die "$KIT is incomplete (no hgen-agent.service.in): build the kit again"
  set -- "$KIT"/wheelhouse/hgen-*.whl
  [ "$#" = 1 ] && [ -f "$1" ] || die "expected one hgen wheel in $KIT/wheelhouse, found: $*"
}

check_systemd_install() {
  [ "$SYSTEMD" = 1 ] || return 0
  [ "$IS_ROOT" = 1 ] || die "installing the systemd unit needs root (sudo), or pass --no-systemd"
  case "$PREFIX" in
    /home/*|/root/*|/run/user/*) die "PREFIX $PREFIX is under a home folder, which the unit hides (ProtectHome=yes): use /opt/hgen-agent" ;;
  esac
}

# Only as root: the agent's own system user (in group video, for cameras), created when missing.
ensure_user() {
  [ "$IS_ROOT" = 1 ] && [ "$AGENT_USER" != root ] || return 0
  id -u "$AGENT_USER" >/dev/null 2>&1 && return 0
  [ "$AGENT_USER" = hgen ] || die "user $AGENT_USER does not exist (create it, or leave AGENT_USER unset for hgen)"
  if getent group video >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$PREFIX/var" --shell /usr/sbin/nologin --groups video hgen
  else
    useradd --system --no-create-home --home-dir "$PREFIX/var" --shell /usr/sbin/nologin hgen
  fi
  echo "created system user hgen"
}

# This kit's code in a venv of its own (its hgen wheel, then its deps, all from the wheelhouse), beside the
# running one: PREFIX/venv points at it only once the kit's config passed its check with it.
install_code() {
  set -- "$KIT"/wheelhouse/hgen-*.whl
  mkdir -p "$PREFIX/venvs"
  NEWVENV=$(mktemp -d "$PREFIX/venvs/v-XXXXXX")
  chmod 755 "$NEWVENV"
  "$PYTHON" -m venv "$NEWVENV"
  "$NEWVENV/bin/pip" install --quiet --no-index --no-deps "$1"
  "$NEWVENV/bin/pip" install --quiet --no-index --find-links "$KIT/wheelhouse" 'hgen[edge]'
}

# PREFIX/venv pointed at the new code with one rename of a link (rename(2) through Python: BusyBox's mv may lack
# -T); a real folder from kits before venvs/ is moved into venvs/ first, and back if the switch fails. The last
# step that can fail: config and code change together.
switch_code() {
  if [ -L "$PREFIX/venv" ]; then
    OLDVENV=$(readlink "$PREFIX/venv")
  elif [ -e "$PREFIX/venv" ]; then
    OLDVENV="venvs/old-$(date -u +%Y%m%dT%H%M%SZ)"
    mv "$PREFIX/venv" "$PREFIX/$OLDVENV"
    MOVED=$OLDVENV
  fi
  ln -sfn "venvs/${NEWVENV##*/}" "$PREFIX/venv.new"
  "$PYTHON" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$PREFIX/venv.new" "$PREFIX/venv"
  SWITCHED=1
  echo "code: $PREFIX/venv -> venvs/${NEWVENV##*/}${OLDVENV:+ (the previous code kept in $OLDVENV)}"
}

# Only the running code and the one before it stay in venvs/ (left-overs of installs cut short go too).
prune_code() {
  for old in "$PREFIX"/venvs/*; do
    [ -e "$old" ] || continue
    case "venvs/${old##*/}" in
      "venvs/${NEWVENV##*/}"|"$OLDVENV") ;;
      *) rm -rf "$old" ;;
    esac
  done
}

# A private file readable by the agent's user only: root-owned 0640 in its group when root installs for
# another user, else 0600 (the installing user is the agent's).
make_private() {
  if [ "$IS_ROOT" = 1 ] && [ "$AGENT_USER" != root ]; then
    chown "root:$(id -gn "$AGENT_USER")" "$1"
    chmod 640 "$1"
  else
    chmod 600 "$1"
  fi
}

# The kit's agent.yaml, bundle/, keys/ and BUILD_INFO copied into a staging folder beside PREFIX/etc (so its
# relative paths, ../var included, resolve as they will once installed): readable by the agent's user, the
# certificates and public keys 0644, device.key and agent.yaml private.
stage_config() {
  mkdir -p "$PREFIX/etc"
  STAGE=$(mktemp -d "$PREFIX/.etc-new-XXXXXX")
  chmod 755 "$STAGE"
  cp -R "$KIT/bundle" "$KIT/keys" "$STAGE/"
  chmod -R u+rwX,go=rX "$STAGE/bundle" "$STAGE/keys"
  [ ! -f "$STAGE/keys/device.key" ] || make_private "$STAGE/keys/device.key"
  cp "$KIT/agent.yaml" "$STAGE/agent.yaml"
  make_private "$STAGE/agent.yaml"
  cp "$KIT/BUILD_INFO" "$STAGE/BUILD_INFO"
  chmod 644 "$STAGE/BUILD_INFO"
}

# The staged copies into PREFIX/etc by mv (the previous ones kept in the staging folder until the install is
# whole: on_exit puts them back after a failure); the previous agent.yaml also kept as agent.yaml.bak-<UTC time>.
swap_config() {
  config="$PREFIX/etc/agent.yaml"
  if [ -f "$config" ]; then
    if cmp -s "$STAGE/agent.yaml" "$config"; then
      echo "agent.yaml unchanged"
    else
      backup="$config.bak-$(date -u +%Y%m%dT%H%M%SZ)"
      cp -p "$config" "$backup"
      chmod 600 "$backup"
      echo "agent.yaml replaced by the kit's; the previous one is kept as $backup"
    fi
  fi
  mkdir "$STAGE/.previous"
  for item in bundle keys BUILD_INFO agent.yaml; do
    SWAPPED="$SWAPPED $item"
    [ ! -e "$PREFIX/etc/$item" ] || mv "$PREFIX/etc/$item" "$STAGE/.previous/$item"
    mv "$STAGE/$item" "$PREFIX/etc/$item"
  done
}

# The install is whole: nothing to put back any more.
finish_swap() {
  SWAPPED=""
  rm -rf "$STAGE"
  STAGE=""
}

# Kits before PREFIX/var kept the outbox and bundle store beside agent.yaml: true when some are still there.
old_state() {
  for old in outbox.sqlite outbox.sqlite-wal outbox.sqlite-shm bundles; do
    [ -e "$PREFIX/etc/$old" ] && [ ! -e "$PREFIX/var/$old" ] && return 0
  done
  return 1
}

# PREFIX/var, the one folder the agent writes: the old layout's state moved in, owned by the agent's user.
prepare_state() {
  mkdir -p "$PREFIX/var"
  for old in outbox.sqlite outbox.sqlite-wal outbox.sqlite-shm bundles; do
    if [ -e "$PREFIX/etc/$old" ] && [ ! -e "$PREFIX/var/$old" ]; then
      mv "$PREFIX/etc/$old" "$PREFIX/var/$old"
      echo "moved $PREFIX/etc/$old to $PREFIX/var/$old"
    fi
  done
  repoint_bundle_record
  own_state
}

# PREFIX/var made and owned by the agent's user (when root installs for another user).
own_state() {
  mkdir -p "$PREFIX/var"
  if [ "$IS_ROOT" = 1 ] && [ "$AGENT_USER" != root ]; then
    chown -R "$AGENT_USER:$(id -gn "$AGENT_USER")" "$PREFIX/var"
    chmod 750 "$PREFIX/var"
  fi
}

# bundles/current.json names the running bundle by absolute path: follow the move from etc/ to var/.
repoint_bundle_record() {
  record="$PREFIX/var/bundles/current.json"
  [ -f "$record" ] || return 0
  real=$(cd "$PREFIX" && pwd -P)
  "$NEWVENV/bin/python" - "$record" "$real/etc/bundles/" "$real/var/bundles/" <<'PY'
import json, sys
record, old, new = sys.argv[1:]
data = json.load(open(record))
if str(data.get("path", "")).startswith(old):
    data["path"] = new + data["path"][len(old):]
    json.dump(data, open(record, "w"))
PY
}

# As the agent's user, so a file it cannot read (or a camera it may not open) is found now.
as_agent() {
  if [ "$IS_ROOT" = 1 ] && [ "$AGENT_USER" != root ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u "$AGENT_USER" -- "$@"
    else
      su -s /bin/sh -c 'exec "$0" "$@"' "$AGENT_USER" "$@"
    fi
  else
    "$@"
  fi
}

# The kit's unit for this PREFIX and user (without SupplementaryGroups=video where no group video exists:
# systemd would refuse to start it).
write_unit() {
  no_video='/^SupplementaryGroups=video$/d'
  getent group video >/dev/null 2>&1 && no_video=''
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@USER@|$AGENT_USER|g" -e "$no_video" "$KIT/hgen-agent.service.in" \
    > "$UNIT_DIR/$UNIT"
}

check_device
check_systemd_install
check_kit
WAS_ACTIVE=0
if [ "$SYSTEMD" = 1 ] && systemctl is-active --quiet "$UNIT"; then
  WAS_ACTIVE=1
fi
ensure_user
stage_config
install_code
own_state
# The staged config first, by the new code, while a running agent still runs: a config or bundle the new agent
# refuses stops here, the running agent's code and config untouched.
(cd "$PREFIX" && as_agent "$NEWVENV/bin/hgen-agent" check --config "$STAGE/agent.yaml")
if [ "$WAS_ACTIVE" = 1 ] && old_state; then
  echo "stopping $UNIT to move its state to $PREFIX/var"
  STOPPED=1
  systemctl stop "$UNIT"
fi
swap_config
prepare_state
(cd "$PREFIX" && as_agent "$NEWVENV/bin/hgen-agent" check --config "$PREFIX/etc/agent.yaml")
switch_code
finish_swap
prune_code

if [ "$SYSTEMD" = 1 ]; then
  write_unit
  systemctl daemon-reload
  systemctl enable "$UNIT"
  if [ "$WAS_ACTIVE" = 1 ]; then
    systemctl restart "$UNIT"
    echo "hgen-agent updated in $PREFIX and restarted as $AGENT_USER (journalctl -u hgen-agent -f)"
  else
    systemctl start "$UNIT"
    echo "hgen-agent installed in $PREFIX and started as $AGENT_USER (journalctl -u hgen-agent -f)"
  fi
else
  echo "hgen-agent installed in $PREFIX; run: $PREFIX/venv/bin/hgen-agent run --config $PREFIX/etc/agent.yaml"
fi
