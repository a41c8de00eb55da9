// recursion checks that recursive calls pair with their own returns: goprobeE2EDepth recurses
// -depth levels and spins -spin at every level before recursing, so a call at level k (0 is the
// outermost) lasts about (depth+1-k) spins. -n outer calls give n*(depth+1) calls in all, and the
// outermost ones are the longest. With -goroutines G, G goroutines each make the -n outer calls at
// the same time: G*n*(depth+1) calls.
package main

import (
	"flag"
	"sync"
	"time"

	"goprobe.test/progs/internal/harness"
)

var spin time.Duration

// goprobeE2EDepth is the traced function (noinline: it must keep its own symbol and RETs).
//
//go:noinline
func goprobeE2EDepth(level int) int {
	busy(spin)
	if level == 0 {
		return 1
	}
	return goprobeE2EDepth(level-1) + 1
}

// busy spins on the CPU for d: sleeping would let the scheduler add noise of its own.
func busy(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

func main() {
	n := flag.Int("n", 200, "outer calls")
	depth := flag.Int("depth", 10, "recursion depth below the outer call")
	goroutines := flag.Int("goroutines", 1, "goroutines that each make the -n outer calls at once")
	flag.DurationVar(&spin, "spin", 100*time.Microsecond, "CPU spin at every level")
	harness.Start()
	var wg sync.WaitGroup
	for g := 0; g < *goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < *n; i++ {
				if got := goprobeE2EDepth(*depth); got != *depth+1 {
					harness.Fail("goprobeE2EDepth returned %d, want %d", got, *depth+1)
				}
			}
		}()
	}
	wg.Wait()
	harness.Result(struct {
		Calls  int   `json:"calls"`
		Outer  int   `json:"outer_calls"`
		Levels int   `json:"levels"`
		SpinNs int64 `json:"spin_ns"`
	}{*goroutines * *n * (*depth + 1), *goroutines * *n, *depth + 1, spin.Nanoseconds()})
}
