# SPDX-License-Identifier: LGPL-2.1-or-later
#
# /run/ostreewatch/status.json as any user reads it (issue 22, docs/logind.md): its mode, its
# text read as uid 65534, between two `ostreewatch status --json` answers from the daemon
# (tests/test_vm_boot.py, assert_status_file). The file must equal what the daemon said when
# both answers carry the same Generation; a change in between (boot-complete.target reached,
# say) is tried again, up to 10 times.
rec status-file.mode stat -c %a /run/ostreewatch/status.json
for try in $(seq 10); do
    rec status-file-cli.json ostreewatch status --json
    rec status-file.json setpriv --reuid=65534 --regid=65534 --clear-groups cat /run/ostreewatch/status.json
    rec status-file-cli2.json ostreewatch status --json
    cmp -s "$OUT/status-file-cli.json" "$OUT/status-file-cli2.json" && break
    sleep 1
done
echo "$try" > "$OUT/status-file.tries"
