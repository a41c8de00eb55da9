// hold puts many goroutines inside a traced call at the same time, as a server does when a
// backend stalls: -goroutines G goroutines each call goprobeE2EHold, which calls
// goprobeE2EHoldInner, which waits until all G goroutines are inside it; then all return. So G
// calls of each function are open at once, one nested in the other.
//
// With -before, the goroutines enter before the program announces itself, and are released by
// the go-ahead: every call began before goprobe attached, so none can be timed, and goprobe must
// say that G returns of each function were unpaired.
//
// With -pause, once all G are inside, the program prints "all in" and waits for one more line
// before releasing them, so that a benchmark can read the tracer's state at the peak.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"goprobe.test/progs/internal/harness"
)

var (
	inside  atomic.Int64
	total   int64
	allIn   = make(chan struct{})
	release = make(chan struct{})
)

//go:noinline
func goprobeE2EHold() int {
	return goprobeE2EHoldInner() + 1
}

//go:noinline
func goprobeE2EHoldInner() int {
	if inside.Add(1) == total {
		close(allIn)
	}
	<-release
	return 1
}

func main() {
	goroutines := flag.Int("goroutines", 100000, "goroutines inside the traced calls at once")
	before := flag.Bool("before", false, "enter before the go-ahead, which releases them")
	pause := flag.Bool("pause", false, "once all are in, print \"all in\" and wait for a line")
	flag.Parse()
	total = int64(*goroutines)
	var wg sync.WaitGroup
	var sum atomic.Int64
	start := func() {
		for i := 0; i < *goroutines; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sum.Add(int64(goprobeE2EHold()))
			}()
		}
		<-allIn
	}
	t0 := time.Now()
	if *before {
		start()
		harness.Start()
	} else {
		harness.Start()
		t0 = time.Now()
		start()
	}
	var paused time.Duration
	if *pause {
		p0 := time.Now()
		fmt.Println("all in")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		paused = time.Since(p0)
	}
	close(release)
	wg.Wait()
	wall := time.Since(t0) - paused
	if got := sum.Load(); got != 2*total {
		harness.Fail("sum %d, want %d", got, 2*total)
	}
	harness.Result(struct {
		Calls  int   `json:"calls"`
		Before bool  `json:"began_before_go"`
		WallNs int64 `json:"wall_ns"` // without the -pause
	}{*goroutines, *before, wall.Nanoseconds()})
}
