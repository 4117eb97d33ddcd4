#!/usr/bin/env bash
# Install the Debian packages of a group from packages.txt that are missing (`demo`, or `test` = demo + test).
# As root it runs apt-get; otherwise `sudo -n` when that works without a password; otherwise it stops at once and
# prints the single command to run. Nothing is installed when nothing is missing, so repeated runs cost a dpkg query.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
group="${1:-test}"
case "$group" in
  demo) wanted='^demo$' ;;
  test) wanted='^(demo|test)$' ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

packages=$(awk -v re="$wanted" '!/^#/ && NF >= 2 && $1 ~ re {print $2}' "$here/packages.txt")
missing=()
for spec in $packages; do
  p="${spec%%\?*}"
  if [ "$spec" != "$p" ] && command -v "${spec#*\?}" >/dev/null; then continue; fi  # package?command: have command
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "hgen: installing missing Debian packages (${group}): ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "hgen: cannot install system packages without root. Run this once, then the make target again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
