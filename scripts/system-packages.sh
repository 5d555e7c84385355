#!/usr/bin/env bash
# Installs the Debian packages nextwatch needs, only those missing, when run as root;
# otherwise names the missing packages and stops.
# Usage: scripts/system-packages.sh [--dry-run] demo|test|bench
#   --dry-run: print the missing packages (one line, space-separated) and install nothing.
set -euo pipefail
dry_run=false
if [ "${1:-}" = --dry-run ]; then
  dry_run=true
  shift
fi
purpose=${1:-demo}
case "$purpose" in
  demo|test|bench) ;;
  *) echo "usage: $0 [--dry-run] demo|test|bench" >&2; exit 2 ;;
esac

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# make demo runs Prometheus beside the API, as the compose stack does.
command -v prometheus >/dev/null || need+=(prometheus)
if [ "$purpose" = demo ] || [ "$purpose" = test ]; then
  # ... and redis_exporter, for Grafana's Redis panels and Prometheus's redis job (a test
  # starts it as the demo does).
  command -v prometheus-redis-exporter >/dev/null || command -v redis_exporter >/dev/null \
    || need+=(prometheus-redis-exporter)
fi
if [ "$purpose" = test ] || [ "$purpose" = bench ]; then
  command -v docker-compose >/dev/null || need+=(docker-compose)
fi
if [ "$purpose" = test ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
fi
if [ "$purpose" = bench ]; then
  command -v wrk >/dev/null || need+=(wrk)
fi

if $dry_run; then
  echo "${need[*]}"
  exit 0
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "nextwatch needs these Debian packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts services on install; nextwatch always runs its own private ones.
for service in redis-server prometheus prometheus-redis-exporter; do
  if [[ " ${need[*]} " == *" $service "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
