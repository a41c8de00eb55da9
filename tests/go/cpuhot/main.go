// cpuhot spends most of its CPU in main.goprobeE2EHot, reached through two call paths,
// goprobeE2EPathA and goprobeE2EPathB, in a known ratio of CPU time (-ratio to 1). Part of the hot
// loop is main.goprobeE2EInlinedMix, which the compiler inlines into goprobeE2EHot: a CPU profile
// must show it as a frame of its own, as Go's pprof does.
//
// Ground truth: the CPU time each path took, measured by the program around each call with the
// thread's CPU clock (the goroutine is locked to its thread), so time the thread spent preempted
// on a busy machine does not count.
package main

import (
	"flag"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EInlinedMix is small: inlined into goprobeE2EHot.
func goprobeE2EInlinedMix(x uint64) uint64 {
	x ^= x >> 13
	return x * 0x2545f4914f6cdd1d
}

//go:noinline
func goprobeE2EHot(n int, seed uint64) uint64 {
	x := seed | 1
	for i := 0; i < n; i++ {
		// Most of the work is the hot function's own ...
		for j := 0; j < 6; j++ {
			x ^= x << 7
			x ^= x >> 9
			x += uint64(j) * 0x9e3779b97f4a7c15
		}
		// ... and some is inlined code.
		x = goprobeE2EInlinedMix(x)
	}
	return x
}

//go:noinline
func goprobeE2EPathA(n int, seed uint64) uint64 { return goprobeE2EHot(n, seed) + 1 }

//go:noinline
func goprobeE2EPathB(n int, seed uint64) uint64 { return goprobeE2EHot(n, seed) + 2 }

// threadCPU is CLOCK_THREAD_CPUTIME_ID: the calling thread's CPU time, in ns.
func threadCPU() int64 {
	var ts syscall.Timespec
	const clockThreadCPUTime = 3
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		harness.Fail("clock_gettime: %v", errno)
	}
	return ts.Nano()
}

func main() {
	ms := flag.Int("ms", 2000, "milliseconds of CPU to burn")
	ratio := flag.Int("ratio", 3, "time on path A for each unit of time on path B")
	cycle := flag.Int("cycle", 40, "milliseconds of one A+B cycle: long against a sampling period, so periodic samples do not alias with the cycle")
	harness.Start()
	runtime.LockOSThread()

	// Calibrate: iterations of the hot loop per millisecond.
	var sink uint64
	t0 := time.Now()
	const probe = 200000
	sink += goprobeE2EHot(probe, 1)
	perMs := int(float64(probe) / (float64(time.Since(t0)) / float64(time.Millisecond)))
	if perMs < 1 {
		perMs = 1
	}
	bIters := perMs * *cycle / (*ratio + 1)
	aIters := bIters * *ratio

	var aNs, bNs int64
	deadline := time.Now().Add(time.Duration(*ms) * time.Millisecond)
	for time.Now().Before(deadline) {
		t0 := threadCPU()
		sink += goprobeE2EPathA(aIters, sink)
		t1 := threadCPU()
		sink += goprobeE2EPathB(bIters, sink)
		t2 := threadCPU()
		aNs += t1 - t0
		bNs += t2 - t1
	}
	if sink == 42 {
		println(sink)
	}
	harness.Result(map[string]int64{"path_a_ns": aNs, "path_b_ns": bNs})
}
