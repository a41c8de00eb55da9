// churn starts -n short-lived goroutines (at most -batch at a time); each calls goprobeE2EChurn
// once and exits. goprobe's per-goroutine map must not keep anything of them once they are gone.
// Run with -linger so the test can read goprobe's map occupancy while the process is alive.
package main

import (
	"flag"
	"sync"
	"sync/atomic"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EChurn is traced.
//
//go:noinline
func goprobeE2EChurn(i int) int {
	return work(i) + 1
}

//go:noinline
func work(i int) int { return i ^ i>>7 }

func main() {
	n := flag.Int("n", 100000, "goroutines, each calling goprobeE2EChurn once")
	batch := flag.Int("batch", 1000, "goroutines alive at once")
	harness.Start()
	var calls int64
	for started := 0; started < *n; {
		var wg sync.WaitGroup
		for j := 0; j < *batch && started < *n; j++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				goprobeE2EChurn(i)
				atomic.AddInt64(&calls, 1)
			}(started)
			started++
		}
		wg.Wait()
	}
	harness.Result(struct {
		Calls int64 `json:"calls"`
	}{calls})
}
