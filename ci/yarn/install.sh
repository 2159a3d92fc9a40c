#!/usr/bin/env bash
# Install what the single-machine YARN cluster needs, idempotently:
#   1. pyspark (spark-submit, spark-yarn and the Hadoop client) into $KY_YARN_PYTHON's
#      environment (the gateway's: it runs spark-submit) and into the kernel venv of
#      ci/kernel-venv.sh when that exists (client-mode drivers on the ssh hosts run as
#      another user, who can't read a venv under /root), from a wheel built once and
#      kept outside the work tree;
#   2. the ResourceManager / NodeManager jars from Maven Central into ~/.m2, and
#      their runtime classpath in ci/yarn/.cache/classpath.txt.
# Usage: bash ci/yarn/install.sh
# Env:   KY_YARN_PYTHON  Python to install pyspark into (default: python3 on PATH)
#        KY_KERNEL_VENV  the kernel venv (default: /opt/kernelyard/kernel-venv)
#        KY_YARN_WHEELS  wheel cache (default: ~/.cache/kernelyard/wheels)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="$here/.cache"
mkdir -p "$cache"

# pyspark is pinned: the Hadoop daemons in pom.xml must be the version of the
# hadoop-client-api jar that this pyspark ships (checked below).
pyspark_version=4.3.0
hadoop_version=$(sed -n 's:.*<hadoop.version>\(.*\)</hadoop.version>.*:\1:p' "$here/pom.xml")
python=${KY_YARN_PYTHON:-python3}
wheels=${KY_YARN_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/kernelyard/wheels}

command -v java >/dev/null || { echo "java missing (Java 17 expected)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "mvn missing" >&2; exit 1; }

install_pyspark() {  # python
  local installed
  installed=$("$1" -c 'import importlib.metadata as m; print(m.version("pyspark"))' 2>/dev/null || true)
  [ "$installed" = "$pyspark_version" ] && return
  # PyPI has only a 456 MB sdist for pyspark; building it takes about a minute.
  # Build it once into a wheel dir that outlives fresh clones of the repo.
  if ! ls "$wheels"/pyspark-"$pyspark_version"-*.whl >/dev/null 2>&1; then
    echo "building the pyspark $pyspark_version wheel into $wheels (once)"
    mkdir -p "$wheels"
    "$1" -m pip wheel -q --no-deps "pyspark==$pyspark_version" -w "$wheels"
  fi
  "$1" -m pip install -q --root-user-action=ignore --find-links "$wheels" "pyspark==$pyspark_version"
}

t0=$SECONDS
install_pyspark "$python"
kernel_venv=${KY_KERNEL_VENV:-/opt/kernelyard/kernel-venv}
if [ -x "$kernel_venv/bin/python" ]; then
  install_pyspark "$kernel_venv/bin/python"
  chmod -R a+rX "$kernel_venv"
fi
spark_home=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
echo "pyspark $pyspark_version in $spark_home ($((SECONDS - t0)) s)"

if [ ! -f "$spark_home/jars/hadoop-client-api-$hadoop_version.jar" ]; then
  echo "pyspark ships $(cd "$spark_home/jars" && ls hadoop-client-api-*.jar), but pom.xml" \
       "says hadoop.version=$hadoop_version: make them match" >&2
  exit 1
fi

t0=$SECONDS
cp_file="$cache/classpath.txt"
# Re-resolve only when the pom changed or a jar vanished from ~/.m2 (a warm mvn
# run still costs a few seconds of JVM start).
fresh=1
if [ -s "$cp_file" ] && [ "$cp_file" -nt "$here/pom.xml" ]; then
  IFS=: read -r -a jars < "$cp_file" || true  # no trailing newline: read returns 1
  for jar in "${jars[@]}"; do [ -f "$jar" ] || { fresh=0; break; }; done
else
  fresh=0
fi
if [ "$fresh" = 0 ]; then
  # Runtime scope: the daemons' own jars plus everything they load at run time
  # (Jersey 2, Jetty, Guice for the webapps; hadoop-hdfs-client for HDFS classes).
  # mvn's output is kept for errors only (-q still prints ANSI resets).
  if ! (cd "$here" && mvn -q -B dependency:build-classpath -Dmdep.includeScope=runtime \
        -Dmdep.outputFile="$cp_file.tmp") > "$cache/mvn.log" 2>&1; then
    cat "$cache/mvn.log" >&2
    exit 1
  fi
  mv "$cp_file.tmp" "$cp_file"
fi
echo "hadoop $hadoop_version classpath: $(tr ':' '\n' < "$cp_file" | wc -l) jars ($((SECONDS - t0)) s)"
