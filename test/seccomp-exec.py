#!/usr/bin/python3
"""Run a command under a seccomp filter built like systemd's SystemCallFilter= allow-list:
the named system calls are allowed, any other kills the process with SIGSYS. Names this
architecture does not have are skipped, as systemd skips them (with a log line). libseccomp sets
no_new_privs before loading, as NoNewPrivileges=yes does.

Usage: seccomp-exec.py ALLOWED_FILE -- COMMAND [ARG...]
ALLOWED_FILE holds system call names separated by white space."""
import os
import sys

import seccomp


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="ascii") as names:
        allowed = names.read().split()
    syscall_filter = seccomp.SyscallFilter(defaction=seccomp.KILL_PROCESS)
    for name in allowed:
        # Negative: unknown, or not a system call on this architecture.
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0:
            syscall_filter.add_rule(seccomp.ALLOW, name)
    syscall_filter.load()
    command = sys.argv[3:]
    os.execvp(command[0], command)


main()
