#!/usr/bin/env bash
# Times the deployment commands on the local Docker engine and prints a
# markdown table: cold `up --demo` (image build included) to 3 healthy
# instances, warm scale +1 to serving, scale -1 (with draining), down;
# then the size of flowgate's image against the binary it was built from.
# Uses its own project and loopback-published ports; removes everything it
# made, even when interrupted. Needs a release build (cargo build --release).
BENCH_NAME=deploy source "$(dirname "$0")/common.sh"

seconds() { local start=$1; python3 -c "import time; print(f'{time.time() - $start:.1f}')"; }
now() { python3 -c 'import time; print(time.time())'; }

# Cold: no flowgate image yet, so the run includes building it.
docker images -q --filter label=io.flowgate.image=1 | xargs -r docker rmi -f >/dev/null
t=$(now); "$bin" up --demo --project "$project" --instances 3 --http-port "$http" --https-port "$https" >/dev/null 2>&1
cold=$(seconds "$t")
image=$(docker inspect -f '{{.Config.Image}}' "$project-proxy")
image_mb=$(docker image inspect -f '{{.Size}}' "$image" | python3 -c 'import sys; print(f"{int(sys.stdin.read()) / 1e6:.1f}")')
binary_mb=$(python3 -c "import os; print(f'{os.path.getsize(\"$bin\") / 1e6:.1f}')")
t=$(now); "$bin" up --demo --project "$project" >/dev/null 2>&1
noop=$(seconds "$t")
t=$(now); "$bin" scale 4 --project "$project" >/dev/null 2>&1
up1=$(seconds "$t")
t=$(now); "$bin" scale 3 --project "$project" >/dev/null 2>&1
down1=$(seconds "$t")
t=$(now); "$bin" down --volumes --project "$project" >/dev/null 2>&1
gone=$(seconds "$t")

echo "| step | seconds | goal |"
echo "|---|---|---|"
echo "| cold \`up --demo\`, 3 healthy (image build included) | $cold | < 15 |"
echo "| \`up\` again (nothing to do) | $noop | |"
echo "| warm \`scale 4\` (one more instance, healthy and serving) | $up1 | < 3 |"
echo "| \`scale 3\` (drain window 5 s, then remove) | $down1 | |"
echo "| \`down --volumes\` | $gone | |"
echo
echo "| image | MB | goal |"
echo "|---|---|---|"
echo "| flowgate's image ($image: the binary without debug info and symbols, its libraries, the CA bundle) | $image_mb | <= 25 |"
echo "| the binary it came from (with its debug info, for profiling) | $binary_mb | |"
