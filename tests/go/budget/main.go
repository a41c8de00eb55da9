// budget is an HTTP server on 127.0.0.1 whose handler calls a small helper many times per
// request: a pattern that matches both makes the helper's probes cost far more than the
// handler's. The overhead budget must detach the helper and keep the handler, every call of it
// counted. It prints "listening PORT" after "ready", serves until its stdin closes, then prints
// the ground truth: how many requests the handler served.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"goprobe.test/progs/internal/harness"
)

var served atomic.Int64

// goprobeE2EBudgetHelper is the hot helper: called -helper times per request.
//
//go:noinline
func goprobeE2EBudgetHelper(i int) int {
	return budgetMix(i*31+7) ^ i
}

//go:noinline
func budgetMix(x int) int {
	return x*17 + x>>3
}

// goprobeE2EBudgetHandle is the handler, called once per request.
//
//go:noinline
func goprobeE2EBudgetHandle(w http.ResponseWriter, helper int, work time.Duration) {
	sum := 0
	for i := 0; i < helper; i++ {
		sum += goprobeE2EBudgetHelper(i)
	}
	time.Sleep(work)
	served.Add(1)
	fmt.Fprintf(w, "%d\n", sum)
}

func main() {
	helper := flag.Int("helper", 200, "calls of the helper per request")
	work := flag.Duration("work", 2*time.Millisecond, "time each request waits (a database call)")
	harness.Start()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		harness.Fail("listen: %v", err)
	}
	fmt.Printf("listening %d\n", listener.Addr().(*net.TCPAddr).Port)
	go http.Serve(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		goprobeE2EBudgetHandle(w, *helper, *work)
	}))
	// Serve until stdin closes (harness.Start read the go-ahead line).
	_, _ = bufio.NewReader(os.Stdin).ReadString(0)
	harness.Result(struct {
		Served int64 `json:"served"`
	}{served.Load()})
}
