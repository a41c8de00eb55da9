// recurse makes goroutine stacks grow, and get copied, while traced calls are live on them.
// main.goprobeE2ERecurse recurses -depth levels with a 2 KiB array in every frame; -g goroutines
// each make -n outer calls. A goroutine starts with a small stack, so its first deep call makes
// the runtime copy the stack to a bigger one several times, moving every live traced frame.
// Every -gcevery outer calls a goroutine runs runtime.GC, which shrinks its then mostly unused
// stack, so the next outer call grows (copies) it again. Every frame checks its array
// after the recursive call returns, so a frame corrupted by tracing fails the checksum.
package main

import (
	"flag"
	"runtime"
	"sync"
	"sync/atomic"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2ERecurse is the traced function; noinline so it keeps its own symbol and RETs (the
// compiler never inlines recursive functions anyway, but this states the intent).
//
//go:noinline
func goprobeE2ERecurse(depth, seed int) int {
	// A large frame: the array is filled before the recursive call and read after it, so it
	// must live on this frame across the call (and across any stack copy the call causes).
	var buf [2048]byte
	for i := range buf {
		buf[i] = byte(seed + depth*i)
	}
	r := 0
	if depth > 0 {
		r = goprobeE2ERecurse(depth-1, seed*31+depth)
	}
	return r + sumBuf(buf[:])
}

// recurseRef computes goprobeE2ERecurse's result without recursion and without tracing.
func recurseRef(depth, seed int) int {
	total := 0
	var buf [2048]byte
	for ; depth >= 0; depth-- {
		for i := range buf {
			buf[i] = byte(seed + depth*i)
		}
		total += sumBuf(buf[:])
		seed = seed*31 + depth
	}
	return total
}

// sumBuf weighs every byte by its position, so a moved or overwritten byte changes the sum.
func sumBuf(b []byte) int {
	s := 0
	for i, v := range b {
		s += (i + 1) * int(v)
	}
	return s
}

func main() {
	n := flag.Int("n", 200, "outer calls per goroutine")
	g := flag.Int("g", 8, "goroutines")
	depth := flag.Int("depth", 50, "recursion depth: each outer call makes depth+1 calls")
	gcEvery := flag.Int("gcevery", 20, "each goroutine runs runtime.GC after this many outer calls (0: never)")
	harness.Start()
	if *n < 0 || *g < 1 || *depth < 0 {
		harness.Fail("need -n >= 0, -g >= 1, -depth >= 0")
	}

	var outer, bad atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *g; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < *n; i++ {
				seed := w*1000003 + i
				if goprobeE2ERecurse(*depth, seed) != recurseRef(*depth, seed) {
					bad.Add(1)
				}
				outer.Add(1)
				if *gcEvery > 0 && i%*gcEvery == *gcEvery-1 {
					// This goroutine is parked in GC with its stack nearly unused, so GC
					// shrinks the stack; the next outer call must grow (copy) it again.
					runtime.GC()
				}
			}
		}(w)
	}
	wg.Wait()

	if got, want := outer.Load(), int64(*n**g); got != want {
		harness.Fail("made %d outer calls, want %d", got, want)
	}
	if bad.Load() != 0 {
		harness.Fail("%d outer calls returned a wrong checksum", bad.Load())
	}
	harness.Result(struct {
		Calls      int64 `json:"calls"`
		OuterCalls int64 `json:"outer_calls"`
	}{outer.Load() * int64(*depth+1), outer.Load()})
}
