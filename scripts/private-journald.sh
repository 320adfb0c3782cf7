#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A private systemd-journald, for scripts/run-sample.sh and the tests (tests/fixtures/journald.py):
#     scripts/private-journald.sh DIR [JOURNALD]
# DIR holds journald.conf, an empty journal/ and, when the host has no valid machine id,
# machine-id. In a new private mount namespace: a tmpfs on /run/systemd (the sockets), DIR's
# journal/ on /var/log/journal (a tmpfs /var/log first where the host has none),
# journald.conf and machine-id bound over the host's; then journald itself, the same pid
# as this script. Nothing of the host is modified.
set -e
exec unshare --mount --propagation private -- sh -c '
set -e
d="$1"
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -m 0755 /run/systemd/journal
touch /run/systemd/journal/flushed
if [ ! -d /var/log/journal ]; then
    mount -t tmpfs -o mode=0755 tmpfs /var/log
    mkdir /var/log/journal
fi
mount --bind "$d/journal" /var/log/journal
mount --bind "$d/journald.conf" /etc/systemd/journald.conf
if [ -f "$d/machine-id" ]; then
    mount --bind "$d/machine-id" /etc/machine-id
fi
exec "$2"' sh "$1" "${2:-/lib/systemd/systemd-journald}"
