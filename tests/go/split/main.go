// split makes each call of the traced function spend known times in known states, for
// `funclatency --split`: it spins -spin on the CPU, waits -chan on a channel that another
// goroutine fills, sleeps -sleep, and reads -read from a pipe that a helper writes slowly (a
// blocking read: a system call), and in cgo builds spends -cgo in a C function. Each phase is timed around it, so the ground truth includes the
// short wake-ups after each wait.
//
// With -hog, GOMAXPROCS is 1 and a goroutine burns the CPU: each call sleeps -sleep in a
// nanosleep system call (meanwhile the runtime hands the only P to the hog) and then spins
// -spin. Back from the system call, the goroutine waits in the run queue until the hog is
// preempted (up to 10 ms): runnable time. (A time.Sleep would not show it: with the P busy, the
// timer itself fires late, which Go counts as sleeping.)
package main

import (
	"flag"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"goprobe.test/progs/internal/harness"
)

var (
	requests = make(chan struct{}, 1)
	replies  = make(chan struct{})
	pipeR    int
	pipeW    int
	writes   = make(chan struct{}, 1)
)

// spin burns the CPU for d, without system calls (time.Now reads the vDSO clock).
//
//go:noinline
func spin(d time.Duration) {
	start := time.Now()
	for time.Since(start) < d {
	}
}

type phases struct {
	spin, chanWait, sleep, read, cgo time.Duration
}

var cgoFor time.Duration

// goprobeE2ESplit is the traced function of the default mode.
//
//go:noinline
func goprobeE2ESplit(spinFor, sleepFor time.Duration) (p phases) {
	t := time.Now()
	spin(spinFor)
	p.spin = time.Since(t)

	t = time.Now()
	requests <- struct{}{}
	<-replies
	p.chanWait = time.Since(t)

	t = time.Now()
	time.Sleep(sleepFor)
	p.sleep = time.Since(t)

	t = time.Now()
	writes <- struct{}{}
	var b [1]byte
	if n, err := syscall.Read(pipeR, b[:]); n != 1 || err != nil {
		harness.Fail("pipe read: %d, %v", n, err)
	}
	p.read = time.Since(t)

	if hasCgo && cgoFor > 0 {
		t = time.Now()
		cWait(cgoFor)
		p.cgo = time.Since(t)
	}
	return p
}

// goprobeE2ESplitHog is the traced function of -hog.
//
//go:noinline
func goprobeE2ESplitHog(spinFor, sleepFor time.Duration) (p phases) {
	t := time.Now()
	ts := syscall.NsecToTimespec(sleepFor.Nanoseconds())
	if err := syscall.Nanosleep(&ts, nil); err != nil {
		harness.Fail("nanosleep: %v", err)
	}
	p.sleep = time.Since(t)
	t = time.Now()
	spin(spinFor)
	p.spin = time.Since(t)
	return p
}

func main() {
	n := flag.Int("n", 200, "calls")
	spinMs := flag.Float64("spin", 2, "milliseconds each call spins")
	chanMs := flag.Float64("chan", 3, "milliseconds each call waits on a channel")
	sleepMs := flag.Float64("sleep", 1, "milliseconds each call sleeps")
	readMs := flag.Float64("read", 2, "milliseconds each call waits for the pipe")
	cgoMs := flag.Float64("cgo", 1, "milliseconds each call spends in C (cgo builds only)")
	hog := flag.Bool("hog", false, "GOMAXPROCS=1 and a CPU hog: runnable time")
	harness.Start()
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	cgoFor = ms(*cgoMs)

	var total phases
	var calls int64
	var wall time.Duration
	if *hog {
		runtime.GOMAXPROCS(1)
		var stop atomic.Bool
		go func() {
			for !stop.Load() {
			}
		}()
		for i := 0; i < *n; i++ {
			t := time.Now()
			p := goprobeE2ESplitHog(ms(*spinMs), ms(*sleepMs))
			wall += time.Since(t)
			total.spin += p.spin
			total.sleep += p.sleep
			calls++
		}
		stop.Store(true)
	} else {
		var fds [2]int
		if err := syscall.Pipe(fds[:]); err != nil {
			harness.Fail("pipe: %v", err)
		}
		pipeR, pipeW = fds[0], fds[1]
		go func() {
			for range requests {
				time.Sleep(ms(*chanMs))
				replies <- struct{}{}
			}
		}()
		go func() {
			for range writes {
				time.Sleep(ms(*readMs))
				if _, err := syscall.Write(pipeW, []byte{1}); err != nil {
					harness.Fail("pipe write: %v", err)
				}
			}
		}()
		for i := 0; i < *n; i++ {
			t := time.Now()
			p := goprobeE2ESplit(ms(*spinMs), ms(*sleepMs))
			wall += time.Since(t)
			total.spin += p.spin
			total.chanWait += p.chanWait
			total.sleep += p.sleep
			total.read += p.read
			total.cgo += p.cgo
			calls++
		}
	}
	harness.Result(struct {
		Calls   int64 `json:"calls"`
		WallNs  int64 `json:"wall_ns"`
		SpinNs  int64 `json:"spin_ns"`
		ChanNs  int64 `json:"chan_ns"`
		SleepNs int64 `json:"sleep_ns"`
		ReadNs  int64 `json:"read_ns"`
		CgoNs   int64 `json:"cgo_ns"`
	}{calls, wall.Nanoseconds(), total.spin.Nanoseconds(), total.chanWait.Nanoseconds(),
		total.sleep.Nanoseconds(), total.read.Nanoseconds(), total.cgo.Nanoseconds()})
}
