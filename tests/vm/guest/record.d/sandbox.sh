# SPDX-License-Identifier: LGPL-2.1-or-later
#
# What the unit's sandbox refused the daemon this boot (tests/test_vm_boot.py,
# sandbox_refusals). Sourced by owvm-guest before the boot's script and, by the line below,
# again after it with OWVM_PHASE=after (files sandbox-*-after.*): the script's writes count too.
# owvm-record: after too
#
# Seccomp: the unit's filter answers EPERM (SystemCallErrorNumber=EPERM), which logs nothing
# by itself. The image has PID 1 run with SYSTEMD_LOG_SECCOMP=1 (ManagerEnvironment=,
# tests/vm/build-image.sh), so systemd loads every filter with the log flag, and boots with
# audit=1, so the kernel has an audit context to log in: each denial is an audit SECCOMP
# record (type 1326: pid, comm, exe, syscall), printed to the kernel log by kauditd.
# Mounts (ProtectSystem=, ReadWritePaths=, InaccessiblePaths=...): the kernel logs no EACCES
# or EROFS, so the daemon's own mount table is recorded beside PID 1's: the host checks that
# every path the daemon needs reaches the same file in both, writable where the host's is.
sfx="${OWVM_PHASE:+-$OWVM_PHASE}"
rec "sandbox-actions-logged$sfx.txt" cat /proc/sys/kernel/seccomp/actions_logged
rec "sandbox-seccomp$sfx.txt" sh -c "journalctl -b -k -o cat --no-pager | grep 'type=1326'"
rec "sandbox-unit$sfx.json" journalctl -b -o json -u ostreewatch.service --no-pager
pid="$(systemctl show ostreewatch.service -p MainPID --value)"
rec "sandbox-mountinfo-daemon$sfx.txt" cat "/proc/$pid/mountinfo"
rec "sandbox-mountinfo-host$sfx.txt" cat /proc/1/mountinfo
