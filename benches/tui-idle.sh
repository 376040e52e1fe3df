#!/usr/bin/env bash
# Idle CPU and memory of the dashboard: a demo deployment with 20 Flow
# instances, 2,000 WebSocket sessions heartbeating every 5 s through the
# proxy over wss (flowgate loadgen), and the dashboard open in tmux (120x40),
# untouched for 30 s. CPU is read from /proc/<pid>/stat. Goal: under 2 % of
# one core. Uses its own project, tmux server and loopback ports; removes
# everything it made, even when interrupted. Needs `cargo build --release`.
BENCH_NAME=tui source "$(dirname "$0")/common.sh"
loadgen_pid=""
cleanup_extra() {
  tmux -L "$project" kill-server >/dev/null 2>&1 || true
  if [ -n "$loadgen_pid" ]; then kill "$loadgen_pid" 2>/dev/null || true; fi
}

instances=${INSTANCES:-20}
sessions=${SESSIONS:-2000}
echo "starting $instances instances ..." >&2
"$bin" up --demo --project "$project" --instances "$instances" --http-port "$http" --https-port "$https" >/dev/null 2>&1
ca="$XDG_STATE_HOME/flowgate/projects/$project/ca.pem"
"$bin" loadgen --url "https://flow.localhost:$https" --resolve "flow.localhost:$https:127.0.0.1" --ca "$ca" \
  --ws-clients "$sessions" --heartbeat 5s --rps 20 --duration 90s >/dev/null 2>&1 &
loadgen_pid=$!
sleep 15
tmux -L "$project" new-session -d -s tui -x 120 -y 40 "$bin tui --project $project"
sleep 8
pid=$(pgrep -f "^$bin tui --project $project" | head -1)
[ -n "$pid" ] || { echo "the dashboard did not start" >&2; tmux -L "$project" capture-pane -p -t tui >&2; exit 1; }
screen=$(tmux -L "$project" capture-pane -p -t tui)
shown=$(grep -o 'sessions [0-9]*' <<<"$screen" | head -1 || true)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t1=$(ticks); sleep 30; t2=$(ticks)
cpu=$(python3 -c "print(f'{($t2 - $t1) / $hz / 30 * 100:.2f}')")
rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
echo "| instances | sessions (shown) | dashboard CPU, % of a core | dashboard RSS, MiB |"
echo "|---:|---:|---:|---:|"
echo "| $instances | $sessions (${shown#sessions }) | $cpu | $rss |"
