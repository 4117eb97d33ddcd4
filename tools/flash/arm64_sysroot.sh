#!/bin/sh
# An arm64 Debian Python 3.11 (+ venv/pip) unpacked into DEST, and qemu-aarch64 registered with binfmt_misc, so
# an aarch64 kit can be installed and run on an x86_64 machine (tools/bench/flash_aarch64.py). Needs root.
#   tools/flash/arm64_sysroot.sh /opt/hgen-arm64-root
set -eu
DEST=${1:?usage: arm64_sysroot.sh DEST}
PACKAGES="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11-venv libc6 zlib1g libexpat1
libssl3 libffi8 libsqlite3-0 liblzma5 libbz2-1.0 libstdc++6 libgcc-s1 libncursesw6 libtinfo6 libreadline8 libuuid1
libcrypt1 libnsl2 libtirpc3 libdb5.3 libgdbm6 libzstd1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
libcom-err2 libkeyutils1"

export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -qq
fi
command -v qemu-aarch64-static >/dev/null || apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
DEBS=$(mktemp -d)
chmod 755 "$DEBS"  # apt downloads as _apt
( cd "$DEBS"
  for p in $PACKAGES; do apt-get download -qq "$p:arm64"; done
  apt-get download -qq python3-pip-whl python3-setuptools-whl media-types )
mkdir -p "$DEST"
for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$DEST"; done
rm -rf "$DEBS"

[ -e /proc/sys/fs/binfmt_misc/register ] || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
QEMU_LD_PREFIX="$DEST" "$DEST/usr/bin/python3.11" -c 'import platform; print("arm64 python", platform.python_version(), platform.machine())'
