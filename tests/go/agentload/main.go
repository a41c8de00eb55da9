// agentload is the workload of the agent's end-to-end tests: -g goroutines each call
// main.goprobeE2EAgent -n times per phase, and each call sleeps that phase's duration
// (-phases, milliseconds, comma-separated). Between two phases the program prints
// "phase N done <unix ms>" and waits for another line on stdin, so a test can do something
// (kill and restart the agent) between a fast and a slow phase. The ground truth is the total
// number of calls, and the calls and time span of each phase.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EAgent is the traced function; noinline keeps its own symbol and RETs.
//
//go:noinline
func goprobeE2EAgent(d time.Duration) {
	time.Sleep(d)
}

type phase struct {
	Ms      float64 `json:"ms"`
	Calls   int64   `json:"calls"`
	StartMs int64   `json:"start_ms"`
	EndMs   int64   `json:"end_ms"`
}

func main() {
	n := flag.Int("n", 100, "calls per goroutine per phase")
	g := flag.Int("g", 4, "goroutines")
	list := flag.String("phases", "1", "milliseconds each call sleeps, per phase")
	harness.Start()
	stdin := bufio.NewReader(os.Stdin)

	var phases []phase
	var total int64
	for i, field := range strings.Split(*list, ",") {
		ms, err := strconv.ParseFloat(field, 64)
		if err != nil || ms < 0 {
			harness.Fail("bad -phases entry %q", field)
		}
		if i > 0 {
			fmt.Printf("phase %d done %d\n", i, time.Now().UnixMilli())
			_, _ = stdin.ReadString('\n')
		}
		d := time.Duration(ms * float64(time.Millisecond))
		p := phase{Ms: ms, StartMs: time.Now().UnixMilli()}
		var calls atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < *g; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < *n; k++ {
					goprobeE2EAgent(d)
					calls.Add(1)
				}
			}()
		}
		wg.Wait()
		p.EndMs = time.Now().UnixMilli()
		p.Calls = calls.Load()
		if p.Calls != int64(*n**g) {
			harness.Fail("phase %d made %d calls, want %d", i, p.Calls, *n**g)
		}
		total += p.Calls
		phases = append(phases, p)
	}
	harness.Result(struct {
		Calls  int64   `json:"calls"`
		Phases []phase `json:"phases"`
	}{total, phases})
}
