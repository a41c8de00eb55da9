// bench is the target of `cargo xtask bench`: it calls one traced function in a loop and prints
// its own cost per call, so the benchmark can tell what a tracer adds to the traced program.
//
// Modes (-mode):
//
//	call   -n calls of goprobeBenchCall, which calls a small function, so it has Go's usual
//	       stack-check prologue (cmp rsp,[r14+0x10]; jbe morestack); prints ns per call.
//	leaf   the same with goprobeBenchLeaf, a frameless leaf: no stack check, no frame.
//	asm    the same with goprobeBenchAsm (bench_amd64.s), whose few instructions cover every
//	       instruction class a probe can land on (nop, nop5, push, pop, mov, lea, add, cmp, jcc,
//	       jmp, ret), for the site-cost table.
//	leafbr the same with goprobeBenchLeafBranch, a frameless leaf that starts with a branch.
//	spin   -n calls of goprobeBenchSpin, which spins for -spin (100 us); prints the median
//	       duration of a call measured before the go-ahead, untraced (the truth), and traced.
//	spinleaf  the same with goprobeBenchSpinLeaf, a frameless leaf that loops for about -spin.
//	rate   calls goprobeBenchRate -rate times per second for -d seconds from -g goroutines
//	       (-rate 0: as fast as they can); prints how many calls it made and how fast.
//	switch -n calls of goprobeBenchSwitch on one P (GOMAXPROCS=1), each a round trip with a
//	       partner goroutine over two channels: two goroutine switches per call, as fast as
//	       they go; prints ns per call and switches per second (for `funclatency --split`,
//	       which probes every goroutine status change).
//
// The protocol is the harness's (ready line, wait for a line on stdin, one JSON result line).
// While waiting, it calls goprobeBenchPing every 10 ms, so a tracer that prints nothing once
// it is attached (bpftrace) can be told to print a line on its first ping.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"goprobe.test/progs/internal/harness"
)

// goprobeBenchCall calls benchMix, so it is not a leaf and has the stack-check prologue.
//
//go:noinline
func goprobeBenchCall(i int) int {
	x := i*7 + 3
	return benchMix(x) ^ (x >> 2)
}

//go:noinline
func benchMix(x int) int {
	return x*31 + x>>3
}

// goprobeBenchLeaf calls nothing and needs no stack: no stack check, no frame.
//
//go:noinline
func goprobeBenchLeaf(i int) int {
	x := i*7 + 3
	return (x*31 + x>>3) ^ (x >> 2)
}

// goprobeBenchLeafBranch is a frameless leaf that starts with a test and a conditional branch,
// as leaves often do (nil and range checks): the kernel emulates a probe on the branch.
//
//go:noinline
func goprobeBenchLeafBranch(i int) int {
	if i < 0 {
		return -i
	}
	x := i*7 + 3
	return (x*31 + x>>3) ^ (x >> 2)
}

// goprobeBenchSpinLeaf is a frameless leaf that loops n times: about 100 us of work once -spin
// calibrates n.
//
//go:noinline
func goprobeBenchSpinLeaf(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s = s*31 + i
	}
	return s
}

// goprobeBenchRate is goprobeBenchCall under another name, for the throughput runs.
//
//go:noinline
func goprobeBenchRate(i int) int {
	x := i*7 + 3
	return benchMix(x) ^ (x >> 2)
}

// goprobeBenchSpin spins for d nanoseconds and returns how long it really spun, measured from
// its first statement to its last.
//
//go:noinline
func goprobeBenchSpin(d time.Duration) time.Duration {
	start := time.Now()
	for {
		if elapsed := time.Since(start); elapsed >= d {
			return elapsed
		}
	}
}

// goprobeBenchPing marks "still waiting for the go-ahead".
//
// goprobeBenchKey takes a string, for `funclatency --by key`'s cost per call.
//
//go:noinline
func goprobeBenchKey(key string) int {
	return len(key) + sink
}

//go:noinline
func goprobeBenchPing() {}

var sink int

// loop calls f n times and returns the median ns per call over chunks of 256 calls, and the
// mean over all. The median of chunks ignores the chunks in which the thread was preempted
// (the machines are shared), which a plain mean over the whole loop does not.
func loop(f func(int) int, n int) (median, mean float64) {
	const chunk = 256
	for i := 0; i < 1000; i++ { // warm up
		sink += f(i)
	}
	chunks := make([]int64, 0, n/chunk+1)
	s := 0
	start := time.Now()
	for i := 0; i < n; {
		t, first := time.Now(), i
		end := i + chunk
		if end > n {
			end = n
		}
		for ; i < end; i++ {
			s += f(i)
		}
		if end-first == chunk { // full chunks only
			chunks = append(chunks, time.Since(t).Nanoseconds())
		}
	}
	elapsed := time.Since(start)
	sink += s
	sort.Slice(chunks, func(a, b int) bool { return chunks[a] < chunks[b] })
	median = float64(chunks[len(chunks)/2]) / chunk
	mean = float64(elapsed.Nanoseconds()) / float64(n)
	return median, mean
}

// leafIterations makes one goprobeBenchSpinLeaf call last about -spin (see calibrate).
var leafIterations = 1

// calibrate finds how many iterations of goprobeBenchSpinLeaf take d.
func calibrate(d time.Duration) int {
	n := 1 << 16
	for {
		t := timeCalls(func() { sink += goprobeBenchSpinLeaf(n) }, 21)
		median := time.Duration(t[len(t)/2])
		if median >= d/4 || n >= 1<<30 {
			return int(float64(n) * float64(d) / float64(median))
		}
		n *= 4
	}
}

// timeCalls calls f n times and returns each call's duration in ns, sorted.
func timeCalls(f func(), n int) []int64 {
	got := make([]int64, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		f()
		got = append(got, time.Since(start).Nanoseconds())
	}
	sort.Slice(got, func(a, b int) bool { return got[a] < got[b] })
	return got
}

var switchPing, switchPong = make(chan int), make(chan int)

// goprobeBenchSwitch hands a value to a partner goroutine and waits for it back: the calling
// goroutine parks, the partner runs, and the caller runs again.
//
//go:noinline
func goprobeBenchSwitch(i int) int {
	switchPing <- i
	return <-switchPong
}

func main() {
	mode := flag.String("mode", "call", "call, leaf, asm, spin or rate")
	n := flag.Int("n", 300000, "calls (call, leaf, asm, spin)")
	spin := flag.Duration("spin", 100*time.Microsecond, "how long each spin call spins")
	rate := flag.Int("rate", 10000, "calls per second in all (rate mode; 0: as fast as possible)")
	dur := flag.Duration("d", 5*time.Second, "how long to call (rate mode)")
	g := flag.Int("g", 2, "goroutines (rate mode)")
	nkeys := flag.Int("keys", 8, "distinct keys (key mode)")

	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				goprobeBenchPing()
			}
		}
	}()
	// The spin modes' truth: each call's duration measured around the call (which adds a few
	// ns), before the go-ahead, while no tracer is attached yet.
	flag.Parse() // harness.Start parses again, which is harmless
	var spinCall func()
	var truth []int64
	switch *mode {
	case "spin":
		spinCall = func() { goprobeBenchSpin(*spin) }
	case "spinleaf":
		leafIterations = calibrate(*spin)
		spinCall = func() { sink += goprobeBenchSpinLeaf(leafIterations) }
	}
	if spinCall != nil {
		truth = timeCalls(spinCall, 200)
	}
	harness.Start()
	close(stop)
	<-pinged

	keys := make([]string, *nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("/api/v1/items/%d", i)
	}
	switch *mode {
	case "call", "leaf", "leafbr", "asm", "key":
		f := map[string]func(int) int{
			"call":   goprobeBenchCall,
			"leaf":   goprobeBenchLeaf,
			"leafbr": goprobeBenchLeafBranch,
			"asm":    goprobeBenchAsm,
			"key":    func(i int) int { return goprobeBenchKey(keys[i%len(keys)]) },
		}[*mode]
		if *n < 256 {
			harness.Fail("need -n >= 256")
		}
		median, mean := loop(f, *n)
		harness.Result(struct {
			Mode      string  `json:"mode"`
			Calls     int     `json:"calls"`
			NsPerCall float64 `json:"ns_per_call"`
			MeanNs    float64 `json:"mean_ns_per_call"`
		}{*mode, *n, median, mean})
	case "spin", "spinleaf":
		traced := timeCalls(spinCall, *n)
		harness.Result(struct {
			Calls         int   `json:"calls"`
			TruthP50Ns    int64 `json:"truth_p50_ns"`
			TruthMinNs    int64 `json:"truth_min_ns"`
			TracedP50Ns   int64 `json:"traced_p50_ns"`
			LeafIteration int   `json:"leaf_iterations"`
		}{*n, truth[len(truth)/2], truth[0], traced[len(traced)/2], leafIterations})
	case "switch":
		runtime.GOMAXPROCS(1)
		go func() {
			for i := range switchPing {
				switchPong <- i
			}
		}()
		for i := 0; i < 1000; i++ {
			goprobeBenchSwitch(i)
		}
		start := time.Now()
		for i := 0; i < *n; i++ {
			goprobeBenchSwitch(i)
		}
		elapsed := time.Since(start)
		harness.Result(struct {
			Mode        string  `json:"mode"`
			Calls       int     `json:"calls"`
			NsPerCall   float64 `json:"ns_per_call"`
			SwitchesSec float64 `json:"switches_per_s"`
		}{*mode, *n, float64(elapsed.Nanoseconds()) / float64(*n), 2 * float64(*n) / elapsed.Seconds()})
	case "rate":
		if *g < 1 {
			harness.Fail("need -g >= 1")
		}
		var calls atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(*dur)
		perG := float64(*rate) / float64(*g)
		for w := 0; w < *g; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				done := 0
				for {
					now := time.Now()
					if !now.Before(deadline) {
						break
					}
					// Pacing: catch up with the schedule in batches, then sleep a little.
					want := int(perG * now.Sub(start).Seconds())
					if *rate == 0 {
						want = done + 1000
					}
					for done < want {
						sink += goprobeBenchRate(done)
						done++
					}
					if *rate != 0 {
						time.Sleep(200 * time.Microsecond)
					}
				}
				calls.Add(int64(done))
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		harness.Result(struct {
			Calls       int64   `json:"calls"`
			WallS       float64 `json:"wall_s"`
			CallsPerSec float64 `json:"calls_per_s"`
		}{calls.Load(), wall.Seconds(), float64(calls.Load()) / wall.Seconds()})
	default:
		harness.Fail("unknown -mode %q", *mode)
	}
}
