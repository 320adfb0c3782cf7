# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Each BLS entry and the deployment its ostree= argument leads to, resolved the way
# ostree-prepare-root follows it (the boot.N link farm to the deploy directory):
# "ENTRY_ID /sysroot/ostree/deploy/STATEROOT/deploy/CHECKSUM.SERIAL" a line. The oracle
# of which deployment a grubenv saved_entry makes the default (tests/test_vm_boot.py).
for conf in /boot/loader/entries/*.conf; do
    [ -e "$conf" ] || continue
    arg="$(sed -n 's/^options .*\bostree=\([^ ]*\).*/\1/p' "$conf")"
    printf '%s %s\n' "$(basename "$conf" .conf)" "$(readlink -f "/sysroot${arg}")"
done > "$OUT/entry-targets.txt"
