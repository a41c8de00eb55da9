// panics checks calls that never return normally. goprobeE2EPanicky panics on every second call
// (recovered by its caller); goprobeE2EGoexit ends its goroutine with runtime.Goexit. Neither
// kind may yield a latency sample, and neither may leave an open entry behind in goprobe's maps.
// Run with -linger so the test can read goprobe's counters while the process is still alive.
package main

import (
	"flag"
	"runtime"
	"sync"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EPanicky is traced. Odd calls panic halfway through.
//
//go:noinline
func goprobeE2EPanicky(i int) int {
	x := mix(i)
	if i%2 == 1 {
		panic(x)
	}
	return x
}

// goprobeE2EGoexit is traced. It never returns: Goexit runs the deferred calls and ends the
// goroutine from inside the traced call.
//
//go:noinline
func goprobeE2EGoexit(done *sync.WaitGroup) {
	defer done.Done()
	_ = mix(3)
	runtime.Goexit()
}

//go:noinline
func mix(i int) int { return i*2654435761 ^ i>>3 }

// safeCall recovers the panic one frame above the traced function.
func safeCall(i int) (returned bool) {
	defer func() {
		if recover() != nil {
			returned = false
		}
	}()
	goprobeE2EPanicky(i)
	return true
}

func main() {
	n := flag.Int("n", 1000, "calls of goprobeE2EPanicky per goroutine (every second one panics)")
	g := flag.Int("g", 4, "goroutines calling goprobeE2EPanicky")
	exits := flag.Int("goexits", 100, "goroutines that end in runtime.Goexit inside goprobeE2EGoexit")
	harness.Start()

	var mu sync.Mutex
	returned, panicked := 0, 0
	var wg sync.WaitGroup
	for w := 0; w < *g; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, p := 0, 0
			for i := 0; i < *n; i++ {
				if safeCall(i) {
					r++
				} else {
					p++
				}
			}
			mu.Lock()
			returned += r
			panicked += p
			mu.Unlock()
		}()
	}
	wg.Wait()

	var exited sync.WaitGroup
	for i := 0; i < *exits; i++ {
		exited.Add(1)
		go goprobeE2EGoexit(&exited)
	}
	exited.Wait()
	if returned+panicked != *n**g {
		harness.Fail("%d returned + %d panicked != %d calls", returned, panicked, *n**g)
	}
	harness.Result(struct {
		Returned int `json:"returned"`
		Panicked int `json:"panicked"`
		Goexits  int `json:"goexits"`
	}{returned, panicked, *exits})
}
