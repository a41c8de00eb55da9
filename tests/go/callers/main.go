// callers calls the traced functions from known call sites a known number of times:
//
//   - -mode=count: main.goprobeE2ECounted is called from three callers, -a, -b and -c times
//     (stackcount must report exactly these three stacks and counts). goprobeE2ECallerC reaches
//     it through an inlined function, so its stack has an inlined frame.
//   - -mode=latency: main.goprobeE2EWork is called -slow times by goprobeE2ESlowCaller, each call
//     sleeping -ms milliseconds, and -fast times by goprobeE2EFastCaller, returning at once
//     (funclatency --stacks must attribute the slow calls to the slow caller).
//   - -mode=contended: -g goroutines each call goprobeE2ECallerA(-a) at once, all from one
//     stack, so that stackcount counts that one stack on every CPU at the same time (its count
//     must still be exactly -g times -a).
//   - -mode=inlined: main.goprobeE2ETrimTag, inlined everywhere, is called -a times by
//     goprobeE2ETrimCallerA and -b times by goprobeE2ETrimCallerB. It inlines
//     goprobeE2EHasTag, and each caller calls goprobeE2EHasTag again right after it, so the
//     code where a copy of goprobeE2ETrimTag ends is a copy of goprobeE2EHasTag: funclatency
//     --stacks must still show the caller, at the line of the call (the line marked "call A" or
//     "call B"), as the frame right below the traced function.
package main

import (
	"flag"
	"sync"
	"time"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2ECounted calls a noinline helper, so it is not a leaf and has the normal stack-check
// prologue.
//
//go:noinline
func goprobeE2ECounted(i int) int { return countedMix(i) ^ i }

//go:noinline
func countedMix(x int) int { return x*31 + x>>3 }

//go:noinline
func goprobeE2ECallerA(n int) (s int) {
	for i := 0; i < n; i++ {
		s += goprobeE2ECounted(i)
	}
	return s
}

//go:noinline
func goprobeE2ECallerB(n int) (s int) {
	for i := 0; i < n; i++ {
		s += goprobeE2ECounted(i) + 1
	}
	return s
}

// goprobeE2EInlinedHop is small enough to be inlined into goprobeE2ECallerC.
func goprobeE2EInlinedHop(i int) int { return goprobeE2ECounted(i) * 2 }

//go:noinline
func goprobeE2ECallerC(n int) (s int) {
	for i := 0; i < n; i++ {
		s += goprobeE2EInlinedHop(i)
	}
	return s
}

// goprobeE2EHasTag and goprobeE2ETrimTag are small enough to be inlined (the first into the
// second, both into the callers below); neither has an out-of-line copy that is called.
func goprobeE2EHasTag(s string) bool { return len(s) >= 4 && s[:4] == "tag:" }

func goprobeE2ETrimTag(s string) string {
	if goprobeE2EHasTag(s) {
		return s[4:]
	}
	return s
}

//go:noinline
func goprobeE2ETrimCallerA(xs []string) (n int) {
	for _, x := range xs {
		t := goprobeE2ETrimTag(x) // call A
		if goprobeE2EHasTag(t) {
			n++
		}
		n += len(t)
	}
	return n
}

//go:noinline
func goprobeE2ETrimCallerB(xs []string) (n int) {
	for i := range xs {
		if goprobeE2EHasTag(goprobeE2ETrimTag(xs[i])) { // call B
			n += i
		}
	}
	return n
}

//go:noinline
func goprobeE2EWork(d time.Duration) int {
	if d > 0 {
		time.Sleep(d)
		return 1
	}
	return countedMix(int(d))
}

//go:noinline
func goprobeE2ESlowCaller(n int, d time.Duration) (s int) {
	for i := 0; i < n; i++ {
		s += goprobeE2EWork(d)
	}
	return s
}

//go:noinline
func goprobeE2EFastCaller(n int) (s int) {
	for i := 0; i < n; i++ {
		s += goprobeE2EWork(0)
	}
	return s
}

func main() {
	mode := flag.String("mode", "count", "count or latency")
	a := flag.Int("a", 1000, "calls from goprobeE2ECallerA")
	b := flag.Int("b", 2000, "calls from goprobeE2ECallerB")
	c := flag.Int("c", 3000, "calls from goprobeE2ECallerC")
	slow := flag.Int("slow", 40, "calls from goprobeE2ESlowCaller")
	fast := flag.Int("fast", 400, "calls from goprobeE2EFastCaller")
	ms := flag.Int("ms", 3, "milliseconds each slow call sleeps")
	g := flag.Int("g", 8, "goroutines of -mode=contended")
	harness.Start()

	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	switch *mode {
	case "count":
		run(func() { goprobeE2ECallerA(*a) })
		run(func() { goprobeE2ECallerB(*b) })
		run(func() { goprobeE2ECallerC(*c) })
		wg.Wait()
		harness.Result(map[string]map[string]int{"callers": {
			"main.goprobeE2ECallerA": *a,
			"main.goprobeE2ECallerB": *b,
			"main.goprobeE2ECallerC": *c,
		}})
	case "contended":
		// One closure for all goroutines: every call has the same stack.
		for w := 0; w < *g; w++ {
			run(func() { goprobeE2ECallerA(*a) })
		}
		wg.Wait()
		harness.Result(map[string]int{"calls": *g * *a})
	case "inlined":
		xs := []string{"tag:tag:a", "tag:b", "c", "tag:", "tag:tag:"}
		in := func(n int) []string {
			out := make([]string, n)
			for i := range out {
				out[i] = xs[i%len(xs)]
			}
			return out
		}
		run(func() { goprobeE2ETrimCallerA(in(*a)) })
		run(func() { goprobeE2ETrimCallerB(in(*b)) })
		wg.Wait()
		harness.Result(map[string]map[string]int{"callers": {
			"main.goprobeE2ETrimCallerA": *a,
			"main.goprobeE2ETrimCallerB": *b,
		}})
	case "latency":
		d := time.Duration(*ms) * time.Millisecond
		run(func() { goprobeE2ESlowCaller(*slow, d) })
		run(func() { goprobeE2EFastCaller(*fast) })
		wg.Wait()
		harness.Result(map[string]int{"slow_calls": *slow, "fast_calls": *fast, "slow_ns": int(d)})
	default:
		harness.Fail("unknown -mode %q", *mode)
	}
}
