// morestack makes every traced call enter through runtime.morestack. main.goprobeE2EBigFrame has
// a 64 KiB frame and is called exactly once by each of -g freshly started goroutines. A new
// goroutine's stack is far smaller than 64 KiB (run with GODEBUG=adaptivestackstart=0 so the
// runtime does not start goroutines with bigger stacks), so the stack check at the function's
// entry fails on every call: the runtime grows the stack and runs the function again from its
// first instruction. A probe at that first instruction fires twice per call; goprobe must
// count each call once.
package main

import (
	"flag"
	"sync"
	"sync/atomic"

	"goprobe.test/progs/internal/harness"
)

const frameBytes = 64 << 10

// goprobeE2EBigFrame is the traced function; noinline so it keeps its own symbol and RETs.
//
//go:noinline
func goprobeE2EBigFrame(x int) int {
	// The array is written and read, so it stays and makes the frame 64 KiB.
	var buf [frameBytes]byte
	for i := 0; i < len(buf); i += 64 {
		buf[i] = byte(x + i/64)
	}
	s := 0
	for i := 0; i < len(buf); i += 64 {
		s += int(buf[i])
	}
	return s
}

// bigFrameRef is goprobeE2EBigFrame's result computed without the big frame.
func bigFrameRef(x int) int {
	s := 0
	for i := 0; i < frameBytes; i += 64 {
		s += int(byte(x + i/64))
	}
	return s
}

func main() {
	g := flag.Int("g", 2000, "goroutines, each calling goprobeE2EBigFrame once")
	harness.Start()

	var calls, bad atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *g; w++ {
		wg.Add(1)
		go func(w int) { // a fresh goroutine, with a fresh small stack, for every call
			defer wg.Done()
			if goprobeE2EBigFrame(w) != bigFrameRef(w) {
				bad.Add(1)
			}
			calls.Add(1)
		}(w)
	}
	wg.Wait()

	if calls.Load() != int64(*g) {
		harness.Fail("made %d calls, want %d", calls.Load(), *g)
	}
	if bad.Load() != 0 {
		harness.Fail("%d calls returned a wrong result", bad.Load())
	}
	harness.Result(struct {
		Calls int64 `json:"calls"`
	}{calls.Load()})
}
