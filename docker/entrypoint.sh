#!/bin/sh
# Entry point of the engine image: `engine ARGS...`, after waiting for Milvus when MILVUS_URI
# names a server (compose's depends_on covers `docker compose run`; this covers `docker run`).
set -eu
case "${MILVUS_URI:-}" in
  http://*|https://*)
    host_port="${MILVUS_URI#*://}"; host_port="${host_port%%/*}"; host_port="${host_port##*@}"
    host="${host_port%:*}"
    health="http://${host}:${MILVUS_HEALTH_PORT:-9091}/healthz"
    i=0
    until curl -fsS --max-time 3 "$health" >/dev/null 2>&1; do
      i=$((i + 1))
      if [ "$i" -ge "${MILVUS_WAIT_S:-120}" ]; then
        echo "engine: Milvus at ${host_port} is not healthy after ${MILVUS_WAIT_S:-120} s; going on" >&2
        break
      fi
      sleep 1
    done
    ;;
esac
exec engine "$@"
