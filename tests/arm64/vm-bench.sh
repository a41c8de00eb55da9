#!/bin/sh
# Runs inside the arm64 test VM for `cargo xtask bench-arm64` (xtask/src/arm64.rs): the ns a probe
# adds per call of main.goprobeE2ECount (tests/go/count, one goroutine), each measured in the same
# run against the untraced program. Sites: goprobe (its entry on the stack-check `b.ls` and its
# RET probe), and plain tracefs uprobes on the same two sites, on the `b.ls` alone, on the RET
# alone, and on the function's first instruction (`ldr x16, [x28, #16]`, which the kernel
# single-steps out of line). Writes markdown table rows to /share/out/KERNEL/bench.md.
set -u
K=$1
OUT=/share/out/$K
G=/share/goprobe
B=$OUT/bench.md
N=200000
T=/sys/kernel/tracing
: >"$B"
prog=$(ls -d /share/go/go1.27/default)/count

elapsed() { # ns one untraced-or-traced run takes
    s=$(date +%s%N)
    "$prog" -nowait -n $N -g 1 >/dev/null
    e=$(date +%s%N)
    echo $((e - s))
}
best() { # the fastest of 3 runs
    m=0
    for _ in 1 2 3; do
        v=$(elapsed)
        if [ $m -eq 0 ] || [ "$v" -lt $m ]; then m=$v; fi
    done
    echo $m
}

json=$($G symbols --json "$prog" main.goprobeE2ECount)
num() { echo "$json" | grep -o "\"$1\":\[*[0-9]*" | head -1 | grep -o '[0-9]*$'; }
addr=$(num addr)
entry_addr=$(num entry_addr)
entry=$(num entry_file_offset)
ret_addr=$(num ret_addrs)
delta=$((entry_addr - entry))
ret=$((ret_addr - delta))
start=$((addr - delta))
echo "entry (b.ls) file offset $entry, RET $ret, function start $start" >&2

base=$(best)

uprobes() { # uprobes at the given file offsets; prints the ns per call they add
    i=0
    for off in "$@"; do
        echo "p:gpb/s$i $prog:$(printf '0x%x' "$off")" >>$T/uprobe_events
        i=$((i + 1))
    done
    echo 1 >$T/events/gpb/enable
    v=$(best)
    echo 0 >$T/events/gpb/enable
    echo >$T/uprobe_events
    echo $(((v - base) / N))
}

$G funclatency --json -b "$prog" go:main.goprobeE2ECount >/tmp/bench.json 2>/tmp/bench.err &
gp=$!
i=0
while [ $i -lt 600 ] && ! grep -qs '^Tracing ' /tmp/bench.json /tmp/bench.err; do
    sleep 0.1
    i=$((i + 1))
done
v=$(best)
kill -INT $gp
wait $gp
goprobe=$(((v - base) / N))
pair=$(uprobes "$entry" "$ret")
bls=$(uprobes "$entry")
retonly=$(uprobes "$ret")
first=$(uprobes "$start")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
{
    echo "| untraced run, per call (process start included) | $((base / N)) ns (whole run $((base / 1000000)) ms for $N calls) | |"
    echo "| goprobe funclatency (entry on \`b.ls\`, probe on the RET) | +$goprobe ns | $(ratio "$goprobe" "$pair") × the two plain uprobes |"
    echo "| plain tracefs uprobes on the same two sites | +$pair ns | 1 |"
    echo "| one uprobe on the stack-check \`b.ls\` (simulated) | +$bls ns | $(ratio "$bls" "$first") × the first instruction's |"
    echo "| one uprobe on the \`ret\` (simulated) | +$retonly ns | $(ratio "$retonly" "$first") × the first instruction's |"
    echo "| one uprobe on the first instruction, \`ldr x16, [x28, #16]\` (single-stepped) | +$first ns | 1 |"
} >>"$B"
cat "$B"
echo DONE >>"$OUT/results"
