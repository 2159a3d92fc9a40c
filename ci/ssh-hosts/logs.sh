#!/usr/bin/env bash
# Print the sshd logs of the hosts started by start.sh.
state=${KY_SSH_STATE:-/tmp/kernelyard-ssh-hosts}
for f in "$state"/sshd_h*.log; do echo "== $f"; cat "$f"; done
