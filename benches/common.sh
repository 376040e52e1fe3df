# Shared by the Docker benchmark scripts (sourced): the release binary, a
# project name of the run's own, a private state dir, two free loopback
# ports ($http, $https), and `cleanup_extra` run before the project is taken
# down on exit, however the script ends.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$PWD/target/release/flowgate"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
project="fgbench-${BENCH_NAME:-run}-$$"
export XDG_STATE_HOME="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free_port); https=$(free_port)
cleanup_extra() { :; }
cleanup() {
  cleanup_extra
  "$bin" down --volumes --project "$project" >/dev/null 2>&1 || true
  rm -rf "$XDG_STATE_HOME"
}
trap cleanup EXIT
