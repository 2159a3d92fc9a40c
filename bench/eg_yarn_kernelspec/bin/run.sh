#!/usr/bin/env bash
# Enterprise Gateway's YARN cluster-mode kernelspec layout, written for bench/yarn.py:
# EG runs this with the kernelspec's argv; SPARK_OPTS and LAUNCH_OPTS come from the
# env stanza of kernel.json (bench/yarn.py writes it). spark-submit returns once YARN has
# the application (spark.yarn.submit.waitAppCompletion=false); the launcher then runs as
# the driver's Python inside the application master's container.
set -euf  # -f: SPARK_OPTS holds 'spark.yarn.jars=local:.../jars/*', which must not glob
proxy_user=()
if [ "${EG_IMPERSONATION_ENABLED:-False}" = "True" ]; then
  proxy_user=(--proxy-user "${KERNEL_USERNAME:?KERNEL_USERNAME is needed with impersonation}")
fi
spec_dir="$(cd "$(dirname "$0")/.." && pwd)"
# kernel.json's env is templated before EG adds KERNEL_ID to the env, so '${KERNEL_ID}'
# arrives literally (EG's own run.sh expands SPARK_OPTS with eval; this replaces just it).
SPARK_OPTS="${SPARK_OPTS//'${KERNEL_ID}'/${KERNEL_ID:?}}"
# SPARK_OPTS and LAUNCH_OPTS are option strings: split on spaces, as EG's kernelspecs do.
# shellcheck disable=SC2086
exec "${SPARK_HOME}/bin/spark-submit" ${SPARK_OPTS} "${proxy_user[@]}" \
  "${spec_dir}/scripts/launch_ipykernel.py" ${LAUNCH_OPTS:-} "$@"
